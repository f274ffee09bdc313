#!/usr/bin/env python3
"""Lists spec fields that differ between two Gateway API CRD bundles (storage versions).

Usage: scripts/crd-field-diff.py OLD_CRD_DIR NEW_CRD_DIR
Used to check that the typed model (gateway-api crate, v1.5.1) covers every v1.6.1 field."""
import yaml,sys,glob,os
def paths(schema,prefix,out):
    if not isinstance(schema,dict): return
    for k,v in (schema.get('properties') or {}).items():
        p=f"{prefix}.{k}" if prefix else k
        out.add(p); paths(v,p,out)
    if 'items' in schema: paths(schema['items'],prefix+'[]',out)
def load(d):
    res={}
    for f in glob.glob(d+'/*.yaml'):
        for doc in yaml.safe_load_all(open(f)):
            if not doc or doc.get('kind')!='CustomResourceDefinition': continue
            kind=doc['spec']['names']['kind']
            for v in doc['spec']['versions']:
                if not v.get('storage'): continue
                s=set(); paths(v['schema']['openAPIV3Schema'],'',s)
                res[kind]=(v['name'],s)
    return res
a=load(sys.argv[1]); b=load(sys.argv[2])
for k in sorted(b):
    if k not in a: print('NEW KIND',k,b[k][0]); continue
    new=sorted(x for x in b[k][1]-a[k][1] if not x.startswith('status'))
    gone=sorted(a[k][1]-b[k][1])
    if new or gone or a[k][0]!=b[k][0]: print(k,a[k][0],'->',b[k][0],'NEW:',new,'GONE:',gone)
