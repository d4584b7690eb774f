{{/* The chart name, for the app.kubernetes.io/name label. */}}
{{- define "gro.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of every object: <release>-<chart>, or the release name alone when it already holds the chart name. */}}
{{- define "gro.fullname" -}}
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

{{- define "gro.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods; they never change across upgrades. */}}
{{- define "gro.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gro.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gro.labels" -}}
{{ include "gro.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gitea-runner-operator
helm.sh/chart: {{ include "gro.chart" . }}
{{- end }}

{{- define "gro.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gro.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gro.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/*
Fails the render on combinations of values that the schema cannot express. Included by the Deployment, which every
render contains.
*/}}
{{- define "gro.validate" -}}
{{- if and .Values.rbac.create (eq .Values.rbac.scope "namespace") (empty .Values.watchNamespaces) }}
{{- fail "rbac.scope=namespace needs watchNamespaces: list the namespaces whose RunnerGroups the operator watches, or use rbac.scope=cluster" }}
{{- end }}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicas=%d needs leaderElection.enabled=true: without it every replica would start runners for the same jobs" (int .Values.replicas)) }}
{{- end }}
{{- if and (.Values.webhook.secret.name) (not .Values.webhook.secret.key) }}
{{- fail "webhook.secret.name is set without webhook.secret.key: name the Secret key that holds the webhook secret" }}
{{- end }}
{{- if and .Values.webhook.ingress.enabled (not .Values.webhook.secret.name) }}
{{- fail "webhook.ingress.enabled needs webhook.secret.name and webhook.secret.key: the operator refuses webhooks without a secret" }}
{{- end }}
{{- if and .Values.webhook.ingress.enabled (not .Values.webhook.ingress.host) }}
{{- fail "webhook.ingress.enabled needs webhook.ingress.host: the host in Gitea's webhook URL" }}
{{- end }}
{{- end }}
