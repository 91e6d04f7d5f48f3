{{/* Labels every object of the release carries. */}}
{{- define "warmserve.labels" -}}
app.kubernetes.io/part-of: warmserve
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* An image reference: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "warmserve.image" -}}
{{ .image.repository }}:{{ .image.tag | default .appVersion }}
{{- end -}}
