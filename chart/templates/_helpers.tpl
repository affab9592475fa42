{{/*
Chart name, or nameOverride.
*/}}
{{- define "command-cert-manager-issuer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release full name (fullnameOverride, else <release>-<name>, or just <release> when it already
contains the name). Truncated to 63 characters. Every object name, including cluster-scoped RBAC,
derives from it, so two releases never collide.
*/}}
{{- define "command-cert-manager-issuer.fullname" -}}
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

{{/*
Chart label value.
*/}}
{{- define "command-cert-manager-issuer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "command-cert-manager-issuer.labels" -}}
helm.sh/chart: {{ include "command-cert-manager-issuer.chart" . }}
{{ include "command-cert-manager-issuer.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "command-cert-manager-issuer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "command-cert-manager-issuer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount the controller runs as.
*/}}
{{- define "command-cert-manager-issuer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "command-cert-manager-issuer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Binding subject: the controller's ServiceAccount.
*/}}
{{- define "command-cert-manager-issuer.subject" -}}
- kind: ServiceAccount
  name: {{ include "command-cert-manager-issuer.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/*
Container env: a list of EnvVar is used as is; a map NAME: value (the Go chart's `{}` default
shape) becomes a sorted list of {name, value}.
*/}}
{{- define "command-cert-manager-issuer.env" -}}
{{- if kindIs "map" .Values.env }}
{{- range $k, $v := .Values.env }}
- name: {{ $k | quote }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- else if .Values.env }}
{{- toYaml .Values.env }}
{{- end }}
{{- end }}

{{/*
"true" when the metrics listener is exposed to the pod network: metrics.service.enabled or
metrics.serviceMonitor.enabled (a ServiceMonitor needs the Service). Empty otherwise.
*/}}
{{- define "command-cert-manager-issuer.metricsExposed" -}}
{{- $m := .Values.metrics | default dict }}
{{- if or (dig "service" "enabled" false $m) (dig "serviceMonitor" "enabled" false $m) }}true{{ end }}
{{- end }}

{{/*
Port of the exposed metrics listener (container port, Service port): metrics.service.port.
*/}}
{{- define "command-cert-manager-issuer.metricsPort" -}}
{{- $m := .Values.metrics | default dict }}
{{- dig "service" "port" 8080 $m | int }}
{{- end }}
