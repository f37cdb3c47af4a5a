{{/*
Chart name, truncated to 63 characters.
*/}}
{{- define "chaperone.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "chaperone.fullname" -}}
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
Resource names.
*/}}
{{- define "chaperone.injectorName" -}}
{{- printf "%s-injector" (include "chaperone.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "chaperone.tlsSecretName" -}}
{{- printf "%s-injector-tls" (include "chaperone.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "chaperone.sidecarConfigMapName" -}}
{{- if .Values.sidecar.existingConfigMap }}
{{- .Values.sidecar.existingConfigMap }}
{{- else }}
{{- printf "%s-sidecar" (include "chaperone.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- define "chaperone.policyConfigMapName" -}}
{{- if eq .Values.policy.source "existing" }}
{{- required "policy.existingConfigMap is required when policy.source=existing" .Values.policy.existingConfigMap }}
{{- else }}
{{- printf "%s-policies" (include "chaperone.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "chaperone.labels" -}}
{{ include "chaperone.baseLabels" . }}
app.kubernetes.io/component: injector
{{- end }}

{{/*
Common labels without the component (callers add their own app.kubernetes.io/component).
*/}}
{{- define "chaperone.baseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "chaperone.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chaperone
{{- end }}

{{/*
Selector labels of the injector.
*/}}
{{- define "chaperone.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chaperone.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end }}

{{/*
The image reference (digest wins over tag; tag defaults to appVersion).
*/}}
{{- define "chaperone.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Namespaces excluded from injection: the configured list plus the release namespace.
*/}}
{{- define "chaperone.excludedNamespaces" -}}
{{- $ns := list .Release.Namespace }}
{{- range .Values.webhook.excludeNamespaces }}
{{- if not (has . $ns) }}
{{- $ns = append $ns . }}
{{- end }}
{{- end }}
{{- toJson $ns }}
{{- end }}

{{/*
Namespaces that receive the sidecar config and policy ConfigMaps (JSON list, deduplicated).
*/}}
{{- define "chaperone.agentNamespaces" -}}
{{- $ns := list }}
{{- range .Values.agentNamespaces }}
{{- if not (has . $ns) }}
{{- $ns = append $ns . }}
{{- end }}
{{- end }}
{{- toJson $ns }}
{{- end }}
