{{/* Names and labels. */}}
{{- define "signer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "signer.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: signer
{{- end -}}

{{- define "signer.labels" -}}
{{ include "signer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: rekor-witness
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "signer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "signer.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "signer.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end -}}

{{/*
A signer-svc key reference (KeyRef in signer-svc/src/config.rs) as a TOML
inline table. Arguments: dict "key" (signer or manifest values) "dir" (where
its secret is mounted).
*/}}
{{- define "signer.keyRef" -}}
{{- $key := .key -}}
{{- if eq $key.backend "file" -}}
{ backend = "file", path = {{ printf "%s/%s" .dir $key.file.secretKey | toJson }} }
{{- else if eq $key.backend "gcp-kms" -}}
{ backend = "gcp-kms", key_version = {{ required "gcpKms.keyVersion is required with backend gcp-kms" $key.gcpKms.keyVersion | toJson }}{{ with $key.gcpKms.endpoint }}, endpoint = {{ toJson . }}{{ end }} }
{{- else if eq $key.backend "pkcs11" -}}
{ backend = "pkcs11", module = {{ toJson $key.pkcs11.module }}, token_label = {{ toJson $key.pkcs11.tokenLabel }}, key_label = {{ toJson $key.pkcs11.keyLabel }}, pin_file = {{ printf "%s/%s" .dir $key.pkcs11.pinSecretKey | toJson }} }
{{- else -}}
{{- fail (printf "unknown key backend %q (file, gcp-kms or pkcs11)" $key.backend) -}}
{{- end -}}
{{- end -}}

{{/* The Secret a key reference needs mounted, if any: name and key. */}}
{{- define "signer.keySecret" -}}
{{- if eq .backend "file" -}}
{{ .file.secretName }}/{{ .file.secretKey }}
{{- else if eq .backend "pkcs11" -}}
{{ .pkcs11.pinSecretName }}/{{ .pkcs11.pinSecretKey }}
{{- end -}}
{{- end -}}

{{- define "signer.seccompProfile" -}}
type: {{ .Values.seccompProfile.type }}
{{- if eq .Values.seccompProfile.type "Localhost" }}
localhostProfile: {{ required "seccompProfile.localhostProfile is required with type Localhost" .Values.seccompProfile.localhostProfile }}
{{- end }}
{{- end -}}

{{/* checkov findings that are decisions, each with its reason. */}}
{{- define "signer.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_15=Images are pinned by digest or release tag and pulled once; Always would make every restart depend on the registry.
{{- if not .Values.image.digest }}
checkov.io/skip2: CKV_K8S_43=No image.digest in these values; a release pins image.digest, which the schema accepts as sha256 only.
{{- end }}
{{- if eq .Values.seccompProfile.type "Localhost" }}
checkov.io/skip3: CKV_K8S_31=Localhost is the project's own syscall allowlist (deploy/seccomp/rekor-witness.json), narrower than RuntimeDefault.
{{- end }}
{{- if eq .Values.signer.backend "gcp-kms" }}
checkov.io/skip4: CKV_K8S_38=Cloud KMS credentials come from Workload Identity, which needs the service account token.
{{- end }}
{{- end -}}
