{{/* Names and labels. */}}
{{- define "rw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rw.core" -}}{{ include "rw.fullname" . }}-core{{- end -}}
{{- define "rw.gateway" -}}{{ include "rw.fullname" . }}-gateway{{- end -}}

{{/* Selector labels of one component: dict "ctx" . "component" "witness-core"|"gateway". */}}
{{- define "rw.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rw.labels" -}}
{{ include "rw.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: rekor-witness
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- end -}}

{{- define "rw.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{- define "rw.seccompProfile" -}}
type: {{ .Values.seccompProfile.type }}
{{- if eq .Values.seccompProfile.type "Localhost" }}
localhostProfile: {{ required "seccompProfile.localhostProfile is required with type Localhost" .Values.seccompProfile.localhostProfile }}
{{- end }}
{{- end -}}

{{/* The pod-level security context every pod of the chart runs with. */}}
{{- define "rw.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  {{- include "rw.seccompProfile" . | nindent 2 }}
{{- end -}}

{{/* The container-level security context of every container. */}}
{{- define "rw.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  {{- include "rw.seccompProfile" . | nindent 2 }}
{{- end -}}

{{/* A TOML table of scalars and one level of sub-tables: dict "name" "limits" "table" $map. */}}
{{- define "rw.tomlTable" -}}
[{{ .name }}]
{{- range $key, $value := .table }}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- if kindIs "map" $value }}

[{{ $.name }}.{{ $key }}]
{{- range $subkey, $subvalue := $value }}
{{ $subkey }} = {{ toJson $subvalue }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The one rule the schema also states: several witness replicas share their
state only through PostgreSQL (each SQLite file would be a separate history,
and two replicas could cosign two different views of one log).
*/}}
{{- define "rw.checkReplicas" -}}
{{- if and (gt (int .Values.witnessCore.replicas) 1) (ne .Values.witnessCore.state.backend "postgres") -}}
{{- fail "witnessCore.replicas > 1 needs witnessCore.state.backend: postgres (SQLite state cannot be shared between replicas)" -}}
{{- end -}}
{{- if and .Values.mirror_path (not (hasPrefix "-----BEGIN PUBLIC KEY-----" .Values.mirrorKeyPem)) -}}
{{- fail "mirror_path (air-gap mode) needs mirrorKeyPem: the mirror producer's PEM public key" -}}
{{- end -}}
{{- if and .Values.mirror_path (eq .Values.witnessCore.state.backend "postgres") -}}
{{- fail "mirror_path (air-gap mode) needs SQLite state: the air gap has no database server" -}}
{{- end -}}
{{- if and .Values.mirror_path (not .Values.mirrorClaimName) -}}
{{- fail "mirror_path (air-gap mode) needs mirrorClaimName: the volume holding the bundles" -}}
{{- end -}}
{{- if and (eq .Values.witnessCore.state.backend "postgres") (not (hasPrefix "postgres" .Values.witnessCore.state.postgresUrl)) -}}
{{- fail "witnessCore.state.postgresUrl must be a postgres:// or postgresql:// URL with backend postgres" -}}
{{- end -}}
{{- end -}}

{{/*
checkov findings that are decisions, each with its reason (checkov reads
`checkov.io/skipN: CHECK=reason` annotations). Argument: dict "ctx" . "image" the image values.
*/}}
{{- define "rw.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_15=Images are pinned by digest or release tag and pulled once; Always would make every restart depend on the registry.
{{- if not .image.digest }}
checkov.io/skip2: CKV_K8S_43=No image.digest in these values; a release pins image.digest, which the schema accepts as sha256 only.
{{- end }}
{{- if eq .ctx.Values.seccompProfile.type "Localhost" }}
checkov.io/skip3: CKV_K8S_31=Localhost is the project's own syscall allowlist (deploy/seccomp/rekor-witness.json), narrower than RuntimeDefault.
{{- end }}
{{- end -}}
