{{/*
Names and labels. Cluster-scoped objects (ClusterRoles, the webhook configuration) are named
after the release's full name, so two releases in one cluster need different release names.
*/}}

{{- define "trustwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trustwarden.fullname" -}}
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

{{- define "trustwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart renders. */}}
{{- define "trustwarden.labels" -}}
helm.sh/chart: {{ include "trustwarden.chart" . }}
{{ include "trustwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trustwarden
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Deployment's selector: never change it after install (selectors are immutable). */}}
{{- define "trustwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trustwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "trustwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trustwarden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Service in front of the webhook. The operator derives its serving Secret's name
     from it: <webhook service>-tls. */}}
{{- define "trustwarden.webhookServiceName" -}}
{{- printf "%s-webhook" (include "trustwarden.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trustwarden.webhookSecretName" -}}
{{- printf "%s-tls" (include "trustwarden.webhookServiceName" .) }}
{{- end }}

{{/* Cluster-scoped: for the release "trustwarden" this is "trustwarden-webhook", the name
     `trustwarden run` uses by default. */}}
{{- define "trustwarden.webhookConfigurationName" -}}
{{- printf "%s-webhook" (include "trustwarden.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trustwarden.metricsServiceName" -}}
{{- printf "%s-metrics" (include "trustwarden.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trustwarden.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The namespaces whose workloads this release serves; empty means every namespace. */}}
{{- define "trustwarden.watchNamespaces" -}}
{{- $namespaces := list }}
{{- range .Values.watchNamespaces }}
{{- $namespaces = append $namespaces . }}
{{- end }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/* Series selector the alerts and the dashboard use to find this release's metrics. */}}
{{- define "trustwarden.seriesSelector" -}}
{{- default (printf "job=%q" (include "trustwarden.metricsServiceName" .)) .Values.metrics.seriesSelector }}
{{- end }}

{{/*
What the operator does in each namespace whose workloads it serves. Rendered once into a
ClusterRole (every namespace) or into one Role per watched namespace (watchNamespaces).
*/}}
{{- define "trustwarden.workloadRules" -}}
# WorkloadIdentities say which pods get which identity: kopf lists and watches them into an
# in-memory index; nothing writes their spec.
- apiGroups: ["trustwarden.io"]
  resources: ["workloadidentities"]
  verbs: ["get", "list", "watch"]
# Ready/Degraded conditions, issued counts and the next renewal go on the status subresource,
# written with a merge patch.
- apiGroups: ["trustwarden.io"]
  resources: ["workloadidentities/status"]
  verbs: ["patch"]
# Pods selected by a PerPod identity: watched with the server-side label selector
# trustwarden.io/identity (RBAC cannot express a label selector, so this covers every pod of
# the namespace). Read only: the webhook mutates pods at admission, no API write needed.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# The issued X.509-SVIDs: one Secret per pod (owned by the pod) or per Shared identity.
# The operator creates them, replaces them on renewal and deletes them at revocation (with a
# uid precondition). Each carries the finalizer trustwarden.io/revoke, which the operator
# removes with a JSON patch (uid-tested) once the serial is in the stored revocation list.
# It watches only Secrets labelled app.kubernetes.io/managed-by=trustwarden, but RBAC cannot
# restrict list/watch by label.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# The trust bundle ConfigMap trustwarden-bundle. Creating cannot be limited to a name (RBAC
# knows no name before the object exists), but a create never overwrites: a taken name answers
# 409. kopf lists and watches only ConfigMaps labelled app.kubernetes.io/managed-by=trustwarden
# (RBAC cannot restrict list/watch by label).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create"]
# Reading, rewriting (when its content hash changes) and deleting (when the namespace is no
# longer entitled to any anchors) reach the bundle ConfigMap by name only: never
# kube-root-ca.crt, extension-apiserver-authentication or any other ConfigMap.
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: ["trustwarden-bundle"]
  verbs: ["get", "update", "delete"]
# Aggregated Events about WorkloadIdentities (issuance failures, rejected specs).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
# Kubernetes 1.37+ pod certificates: the kubelet's PodCertificateRequests are listed and
# watched (requests of other signers are dropped unread) and answered through the status
# subresource with `update`, the only verb that sets it. The spec is never written, and
# nothing here creates a request: only a node may, for its own pods (NodeRestriction).
- apiGroups: ["certificates.k8s.io"]
  resources: ["podcertificaterequests"]
  verbs: ["get", "list", "watch"]
# Issued, Denied or Failed, with the chain: a PUT of the whole object to /status.
- apiGroups: ["certificates.k8s.io"]
  resources: ["podcertificaterequests/status"]
  verbs: ["update"]
{{- end }}
