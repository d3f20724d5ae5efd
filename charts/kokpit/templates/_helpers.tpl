{{/* Helm's labels on every object of the chart (not on pods: a new chart version would
roll them). kokpit's own labels are the manifests'. */}}
{{- define "kokpit.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 }}
{{- end }}
