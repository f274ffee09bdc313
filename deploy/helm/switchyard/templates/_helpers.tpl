{{- define "switchyard.xdsHost" -}}
switchyard-xds.{{ .Release.Namespace }}.svc.cluster.local
{{- end -}}
