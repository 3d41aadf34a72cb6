{{/* Names */}}
{{- define "fedprune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fedprune.fullname" -}}
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

{{- define "fedprune.minio.fullname" -}}{{ include "fedprune.fullname" . | trunc 57 | trimSuffix "-" }}-minio{{- end -}}
{{- define "fedprune.mlflow.fullname" -}}{{ include "fedprune.fullname" . | trunc 56 | trimSuffix "-" }}-mlflow{{- end -}}
{{- define "fedprune.postgresql.fullname" -}}{{ include "fedprune.fullname" . | trunc 52 | trimSuffix "-" }}-postgresql{{- end -}}

{{/* Labels: common, and the selector labels of one component (pass (list $ "component")) */}}
{{- define "fedprune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "fedprune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedprune
{{- end -}}

{{- define "fedprune.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "fedprune.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "fedprune.componentLabels" -}}
{{ include "fedprune.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/*
Images. The project image must name its registry (no default could exist in yours): the first
path segment holds a dot or a port, or is localhost. image.digest (sha256:…) wins over the tag.
*/}}
{{- define "fedprune.checkRepository" -}}
{{- $key := index . 0 -}}{{- $repo := index . 1 -}}
{{- $first := index (splitList "/" $repo) 0 -}}
{{- if not $repo -}}
{{- fail (printf "%s is required: the registry-qualified repository of the fedprune image (images/Dockerfile) you pushed, e.g. --set %s=registry.example.com/fedprune" $key $key) -}}
{{- end -}}
{{- if not (and (contains "/" $repo) (or (contains "." $first) (contains ":" $first) (eq $first "localhost"))) -}}
{{- fail (printf "%s %q is not registry-qualified: name the registry host (a dot, a port or localhost), e.g. registry.example.com/fedprune; a bare name would be pulled from Docker Hub, where no fedprune image exists" $key $repo) -}}
{{- end -}}
{{- end -}}

{{- define "fedprune.image" -}}
{{- include "fedprune.checkRepository" (list "image.repository" .Values.image.repository) -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- /* Explicit pullPolicy wins; else Always for a tag (a re-pushed tag under IfNotPresent
leaves nodes on the old image), IfNotPresent for a digest (it cannot change). */ -}}
{{- define "fedprune.pullPolicy" -}}
{{- if .Values.image.pullPolicy -}}
{{- .Values.image.pullPolicy -}}
{{- else -}}
{{- ternary "IfNotPresent" "Always" (not (empty .Values.image.digest)) -}}
{{- end -}}
{{- end -}}

{{- /* MLflow's image: the project image's server build (its tag + "-server", `make
image-server`: the S3 proxy and PostgreSQL driver the pipeline pods do not carry) unless
mlflow.image names another; a project image by digest has no tag to derive it from. */ -}}
{{- define "fedprune.mlflow.image" -}}
{{- $img := .Values.mlflow.image -}}
{{- if not (or $img.repository $img.tag $img.digest) -}}
{{- if .Values.image.digest -}}
{{- fail "mlflow.image: required when image.digest is set (the server image's own repository and digest or tag; `make image-server` builds it)" -}}
{{- end -}}
{{- printf "%s-server" (include "fedprune.image" .) -}}
{{- else -}}
{{- $repo := default .Values.image.repository $img.repository -}}
{{- include "fedprune.checkRepository" (list (ternary "mlflow.image.repository" "image.repository" (not (empty $img.repository))) $repo) -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default (default .Chart.AppVersion .Values.image.tag) $img.tag) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "fedprune.mlflow.pullPolicy" -}}
{{- $img := .Values.mlflow.image -}}
{{- if not (or $img.repository $img.tag $img.digest) -}}
{{- default (include "fedprune.pullPolicy" .) $img.pullPolicy -}}
{{- else -}}
{{- default (default (ternary "IfNotPresent" "Always" (not (empty $img.digest))) .Values.image.pullPolicy) $img.pullPolicy -}}
{{- end -}}
{{- end -}}

{{- /* The pod label every pipeline pod carries (pipelines/federated_pruning.py sets it; the
CronJob's pods too): the NetworkPolicies admit exactly these. Not configurable. */ -}}
{{- define "fedprune.pipelinePodLabels" -}}
fedprune.io/pipeline: "true"
{{- end -}}

{{/* Namespaces where pipeline pods run */}}
{{- /* The release namespace always (the CronJob runs there), then pipeline.namespaces */ -}}
{{- define "fedprune.pipelineNamespaces" -}}
{{- toJson (prepend .Values.pipeline.namespaces .Release.Namespace | uniq) -}}
{{- end -}}

{{- /* Where the data PVC and its fetch Job go: pipeline.namespaces, else the release namespace */ -}}
{{- define "fedprune.dataNamespaces" -}}
{{- toJson (default (list .Release.Namespace) .Values.pipeline.namespaces | uniq) -}}
{{- end -}}

{{- /* The profile namespace the CronJob submits to: schedule.namespace, else the first of
pipeline.namespaces, else none (single-user KFP) */ -}}
{{- define "fedprune.schedule.namespace" -}}
{{- $ns := .Values.schedule.namespace | default (first .Values.pipeline.namespaces) | default "" -}}
{{- if and $ns (not (has $ns .Values.pipeline.namespaces)) -}}
{{- fail (printf "schedule.namespace %q is not one of pipeline.namespaces %v: the chart puts the ServiceAccount, credentials and KFP permissions the run needs only there" $ns .Values.pipeline.namespaces) -}}
{{- end -}}
{{- $ns -}}
{{- end -}}

{{/* In-cluster endpoints */}}
{{- define "fedprune.minio.endpoint" -}}
{{- printf "%s.%s.svc.cluster.local:%v" (include "fedprune.minio.fullname" .) .Release.Namespace .Values.minio.service.port -}}
{{- end -}}

{{- define "fedprune.mlflow.url" -}}
{{- printf "http://%s.%s.svc.cluster.local:%v" (include "fedprune.mlflow.fullname" .) .Release.Namespace .Values.mlflow.port -}}
{{- end -}}

{{/*
Generated credentials. A value given in values.yaml wins; otherwise the live Secret's value is
kept (upgrade); otherwise 40 random characters. The result is memoised in .Values so every
template of one render sees the same one. `helm template` (GitOps) has no live Secret: there,
use minio.auth.existingSecret and give minio.auth.pipelineSecretKey (and sites' secretKey).
*/}}
{{- define "fedprune.minio.secretName" -}}
{{- default (include "fedprune.minio.fullname" .) .Values.minio.auth.existingSecret -}}
{{- end -}}

{{- define "fedprune.minio.rootPassword" -}}
{{- if not .Values.minio.auth.rootPassword -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "fedprune.minio.fullname" .) -}}
{{- if and $live $live.data (hasKey $live.data "root-password") -}}
{{- $_ := set .Values.minio.auth "rootPassword" (index $live.data "root-password" | b64dec) -}}
{{- else -}}
{{- $_ := set .Values.minio.auth "rootPassword" (randAlphaNum 40) -}}
{{- end -}}
{{- end -}}
{{- .Values.minio.auth.rootPassword -}}
{{- end -}}

{{- /* The pipeline pods' MinIO user (not root: its policy allows only the bucket). The live
key is kept only if the live Secret is this user's (an older chart put root's keys there). */ -}}
{{- define "fedprune.minio.pipelineSecretKey" -}}
{{- $auth := .Values.minio.auth -}}
{{- if eq $auth.pipelineUser $auth.rootUser -}}
{{- fail (printf "minio.auth.pipelineUser %q must differ from minio.auth.rootUser: pipeline pods must not hold MinIO's root credentials" $auth.pipelineUser) -}}
{{- end -}}
{{- if not $auth.pipelineSecretKey -}}
{{- $kept := "" -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace .Values.pipeline.credentialsSecret -}}
{{- if and $live $live.data (hasKey $live.data "s3-access-key") (hasKey $live.data "s3-secret-key") -}}
{{- if eq (index $live.data "s3-access-key" | b64dec) $auth.pipelineUser -}}
{{- $kept = index $live.data "s3-secret-key" | b64dec -}}
{{- end -}}
{{- end -}}
{{- $_ := set $auth "pipelineSecretKey" (default (randAlphaNum 40) $kept) -}}
{{- end -}}
{{- $auth.pipelineSecretKey -}}
{{- end -}}

{{- define "fedprune.postgresql.password" -}}
{{- if not .Values.postgresql.auth.password -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "fedprune.postgresql.fullname" .) -}}
{{- if and $live $live.data (hasKey $live.data "password") -}}
{{- $_ := set .Values.postgresql.auth "password" (index $live.data "password" | b64dec) -}}
{{- else -}}
{{- $_ := set .Values.postgresql.auth "password" (randAlphaNum 40) -}}
{{- end -}}
{{- end -}}
{{- .Values.postgresql.auth.password -}}
{{- end -}}

{{/*
The cluster half of an experiment config for this release: where the store and MLflow are (fully
qualified names: pipeline pods run in other namespaces), which image, pull policy, ServiceAccount
and Secret the components use, the GPU pool of the aggregation pods and the data volume.
*/}}
{{- define "fedprune.clusterConfig" -}}
{{- $aggregator := dict "device" "cpu" -}}
{{- if .Values.gpu.enabled -}}
{{- $aggregator = dict "device" "gpu" "accelerator_type" .Values.gpu.acceleratorType "accelerator_limit" .Values.gpu.acceleratorLimit "node_selector" .Values.gpu.nodeSelector "tolerations" .Values.gpu.tolerations "resources" .Values.gpu.resources -}}
{{- if .Values.gpu.image -}}
{{- include "fedprune.checkRepository" (list "gpu.image" .Values.gpu.image) -}}
{{- $_ := set $aggregator "image" .Values.gpu.image -}}
{{- else if .Values.image.digest -}}
{{- fail "gpu.image is required with image.digest: the GPU aggregator's CUDA image is derived from the project image's tag (<tag>-cuda), and a digest has none; give its full reference, e.g. registry.example.com/fedprune@sha256:… or registry.example.com/fedprune:0.1.0-cuda" -}}
{{- end -}}
{{- end -}}
{{- $kubeflow := dict
  "image" (include "fedprune.image" .)
  "image_pull_policy" (include "fedprune.pullPolicy" .)
  "service_account" .Values.pipeline.serviceAccount.name
  "credentials_secret" .Values.pipeline.credentialsSecret
  "aggregator" $aggregator
-}}
{{- if .Values.data.pvc.enabled -}}
{{- $_ := set $kubeflow "data_pvc" .Values.data.pvc.name -}}
{{- end -}}
{{- $cfg := dict
  "store" (printf "s3://%s/runs" .Values.minio.bucket)
  "s3" (dict "endpoint" (include "fedprune.minio.endpoint" .) "secure" false)
  "tracking" (include "fedprune.mlflow.url" .)
  "kubeflow" $kubeflow
-}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Volumes every container of the chart gets: a writable /tmp on a read-only root fs */}}
{{- define "fedprune.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{/*
A site's MinIO user (sites as places): its Secret's name and its generated key, memoised in
.Values.sites like the passwords above (the live Secret's key is kept on upgrade).
*/}}
{{- define "fedprune.site.secretName" -}}
{{- $root := index . 0 -}}{{- $site := index . 1 -}}
{{- printf "%s-site-%s" (include "fedprune.fullname" $root | trunc 30 | trimSuffix "-") $site | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fedprune.site.secretKey" -}}
{{- $root := index . 0 -}}{{- $site := index . 1 -}}
{{- $values := index $root.Values.sites $site -}}
{{- if not $values.secretKey -}}
{{- $live := lookup "v1" "Secret" $root.Release.Namespace (include "fedprune.site.secretName" (list $root $site)) -}}
{{- if and $live $live.data (hasKey $live.data "s3-secret-key") -}}
{{- $_ := set $values "secretKey" (index $live.data "s3-secret-key" | b64dec) -}}
{{- else -}}
{{- $_ := set $values "secretKey" (randAlphaNum 40) -}}
{{- end -}}
{{- end -}}
{{- $values.secretKey -}}
{{- end -}}
