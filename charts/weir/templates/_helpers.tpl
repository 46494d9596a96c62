{{/* The chart's name, shortened to fit a DNS label. */}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, used for every object the chart creates. */}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "weir.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The rules weir's controllers need whatever GitSync applies. Kept equal to RULES in src/rbac.rs
(tests/helm_chart.rs checks that the rendered role grants every entry there).
*/}}
{{- define "weir.controllerRules" -}}
# Rollout, analysis, GitSync and alerts: weir's own kinds.
- apiGroups: [weir.io]
  resources: [rollouts]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [weir.io]
  resources: [rollouts/status]
  verbs: [update, patch]
- apiGroups: [weir.io]
  resources: [analysisruns]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [weir.io]
  resources: [analysisruns/status, gitsyncs/status, alertproviders/status]
  verbs: [update]
- apiGroups: [weir.io]
  resources: [gitsyncs]
  verbs: [get, list, watch]
- apiGroups: [weir.io]
  resources: [alertproviders]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [weir.io]
  resources: [analysistemplates, clusteranalysistemplates]
  verbs: [get, patch, delete]
# Rollout: the ReplicaSets it scales, the Services and routes it points at canary or stable.
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, patch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, patch]
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, list, watch, patch]
# Events: recorded by every controller, watched by the alert controller.
- apiGroups: [""]
  resources: [events]
  verbs: [list, watch, create]
# Credentials for metric providers, Git and chat webhooks, named by the objects that use them.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}

{{/* Leader election: a Lease in the release namespace. */}}
{{- define "weir.leaseRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
{{- end }}
