{{/*
Helpers of the voice-agent-operator chart. Templates use only: define,
include, if/else, range, with, variables, and the functions include, toYaml,
nindent, indent, quote, default, required, trunc, trimSuffix, printf,
contains, int, fail, eq, ne, and, or, not and .Files.Get (tests/chart.rs
renders the chart with exactly these).
*/}}

{{/* The name label. Fixed: the operator's VoiceAgent NetworkPolicies select
the operator and metrics service pods by it. */}}
{{- define "vao.name" -}}
voice-agent-operator
{{- end }}

{{/* Name prefix of every object. */}}
{{- define "vao.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "vao.metricsName" -}}
{{- printf "%s-metrics" (include "vao.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vao.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vao.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vao.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "vao.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: voice-agent-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "vao.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "vao.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "vao.metricsSelectorLabels" -}}
app.kubernetes.io/name: {{ include "vao.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: metrics
{{- end }}

{{- define "vao.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "vao.metricsUrl" -}}
{{- if .Values.metricsService.url }}
{{- .Values.metricsService.url }}
{{- else }}
{{- printf "http://%s.%s.svc:9090" (include "vao.metricsName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Pod Security "restricted", the same as the pods the operator renders. */}}
{{- define "vao.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "vao.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
RBAC rules: exactly operator/src/rbac.rs (tests/chart.rs compares them).
WATCHED: in the watched namespaces.
*/}}
{{- define "vao.rules.watched" -}}
- apiGroups: ["voiceagent.io"]
  resources: ["voiceagents"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["voiceagent.io"]
  resources: ["voiceagents/status"]
  verbs: ["get", "patch"]
- apiGroups: ["voiceagent.io"]
  resources: ["phonenumbers"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["voiceagent.io"]
  resources: ["phonenumbers/status"]
  verbs: ["patch"]
- apiGroups: ["voiceagent.io"]
  resources: ["calls"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: ["voiceagent.io"]
  resources: ["calls/status"]
  verbs: ["patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* OPERATOR_NAMESPACE: in the release namespace. */}}
{{- define "vao.rules.operatorNamespace" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/* CLUSTER: cluster-scoped. */}}
{{- define "vao.rules.cluster" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get"]
{{- end }}
