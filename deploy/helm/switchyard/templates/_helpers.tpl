{{- define "switchyard.xdsHost" -}}
switchyard-xds.{{ .Release.Namespace }}.svc.cluster.local
{{- end -}}

{{- define "switchyard.xdsServerName" -}}
switchyard-xds.{{ .Release.Namespace }}.svc
{{- end -}}
