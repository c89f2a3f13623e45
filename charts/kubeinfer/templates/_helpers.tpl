{{/* Names and labels shared by every template. */}}

{{- define "kubeinfer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubeinfer.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubeinfer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeinfer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubeinfer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kubeinfer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubeinfer
{{- end -}}

{{- define "kubeinfer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubeinfer.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubeinfer.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The rules the operator needs in every namespace it watches (cluster-wide: in all of them).
Each line names the code that needs it (operator/kubeinfer/clients/kube.py and kopf's watches).
*/}}
{{- define "kubeinfer.namespacedRules" -}}
# InferenceServices: kopf watches them; the reconciler re-reads one before writing status.
- apiGroups: [kubeinfer.io]
  resources: [inferenceservices]
  verbs: [get, list, watch]
# Status is the operator's one write to a user object (a merge patch of the subresource).
- apiGroups: [kubeinfer.io]
  resources: [inferenceservices/status]
  verbs: [get, patch]
# Children, server-side applied by the kubeinfer-reconciler field manager and watched by kopf.
# delete: a router Deployment goes when spec.router.enabled is switched off.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# Replicas: written only by the kubeinfer-autoscaler field manager through the scale subresource.
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, patch, delete]
# kubeinfer-router (spec.router): its ServiceAccount, and a Role and RoleBinding granting it
# pods get/list/watch, deployments/scale get/patch and configmaps get/list/watch (its own, by
# name: it watches its router.yaml), which this role holds above (RBAC refuses a Role granting
# more than its creator has; tests/integration/helm checks the chart covers core/router.py's
# rules). Listed each resync (drift), deleted when the router is switched off.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, list, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, create, patch, delete]
# A PodDisruptionBudget is deleted again when a service scales to one replica or opts out.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
# Pods: readiness for status, and the Ready pods the autoscaler scrapes. patch: a scale-in's
# marks on the pods it removes (pod-deletion-cost and the router's draining annotation),
# server-side applied by the kubeinfer-autoscaler field manager.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
# InferencePools (Gateway API Inference Extension), one per InferenceService where that CRD is
# installed: applied, listed each resync for drift, deleted when spec.inferencePool.enabled is
# false (clients/cluster.py). Without the CRD the operator never calls these.
- apiGroups: [inference.networking.k8s.io]
  resources: [inferencepools]
  verbs: [get, list, create, patch, delete]
# Events on InferenceServices (scaling decisions, missing runtimes, conflicts).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* Cluster-scoped reads, needed in both modes. */}}
{{- define "kubeinfer.clusterRules" -}}
# The runtime catalogue (cluster-scoped): kopf watches it; the reconciler lists it.
- apiGroups: [kubeinfer.io]
  resources: [inferenceruntimes]
  verbs: [get, list, watch]
# kopf checks the CRDs of the resources it serves; the InferencePool CRD is watched and read
# (clients/cluster.py): the operator creates pools only where it is installed.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
{{- end -}}
