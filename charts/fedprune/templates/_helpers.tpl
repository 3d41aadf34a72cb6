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

{{/* Images */}}
{{- define "fedprune.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "fedprune.mlflow.image" -}}
{{- $img := .Values.mlflow.image -}}
{{- printf "%s:%s" (default .Values.image.repository $img.repository) (default (default .Chart.AppVersion .Values.image.tag) $img.tag) -}}
{{- end -}}

{{/* Namespaces where pipeline pods run */}}
{{- /* The release namespace always (the CronJob runs there), then pipeline.namespaces */ -}}
{{- define "fedprune.pipelineNamespaces" -}}
{{- toJson (prepend .Values.pipeline.namespaces .Release.Namespace | uniq) -}}
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
template of one render (the MinIO Secret and the pipeline credentials Secret) sees the same one.
*/}}
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
The cluster half of an experiment config for this release: where the store and MLflow are,
which image and Secret the components use, and the GPU pool of the aggregation pods.
*/}}
{{- define "fedprune.clusterConfig" -}}
{{- $aggregator := dict "device" "cpu" -}}
{{- if .Values.gpu.enabled -}}
{{- $aggregator = dict "device" "gpu" "accelerator_type" .Values.gpu.acceleratorType "accelerator_limit" .Values.gpu.acceleratorLimit "node_selector" .Values.gpu.nodeSelector "tolerations" .Values.gpu.tolerations "resources" .Values.gpu.resources -}}
{{- end -}}
{{- $cfg := dict
  "store" (printf "s3://%s/runs" .Values.minio.bucket)
  "s3" (dict "endpoint" (include "fedprune.minio.endpoint" .) "secure" false)
  "tracking" (include "fedprune.mlflow.url" .)
  "kubeflow" (dict "image" (include "fedprune.image" .) "credentials_secret" .Values.pipeline.credentialsSecret "aggregator" $aggregator)
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
