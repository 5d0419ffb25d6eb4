{{- define "ap.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ap.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ap.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ap.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "ap.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secrets" (include "ap.fullname" .)) -}}
{{- end -}}

{{/* Environment shared by every role: the ConfigMap and the Secret. */}}
{{- define "ap.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "ap.fullname" . }}-config
  - secretRef:
      name: {{ include "ap.secretName" . }}
{{- end -}}

{{/* The pod's common part: security, scheduling, writable scratch (the root filesystem is read-only). */}}
{{- define "ap.podCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "ap.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: prometheus
  emptyDir: {}
{{- end -}}

{{- define "ap.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: prometheus
  mountPath: /tmp/prometheus
{{- end -}}

{{/* Wait until every migration is applied (the init Job applies them). */}}
{{- define "ap.waitForMigrations" -}}
- name: wait-for-migrations
  image: {{ include "ap.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["sh", "-c", "until python manage.py migrate --check >/dev/null 2>&1; do echo waiting for migrations; sleep 5; done"]
  {{- include "ap.envFrom" . | nindent 2 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    requests: {cpu: 50m, memory: 128Mi}
    limits: {memory: 256Mi}
  volumeMounts:
    {{- include "ap.scratchMounts" . | nindent 4 }}
{{- end -}}

{{/* Pod annotations that roll the pods when their settings change: the ConfigMap's values and the
Secret's (the chart's own from `secrets`; an existing one read from the cluster at install, plus
`existingSecretRevision`, which a secret store's sync can bump). */}}
{{- define "ap.checksums" -}}
checksum/config: {{ toJson .Values.config | sha256sum }}
{{- if .Values.existingSecret }}
{{- $found := lookup "v1" "Secret" .Release.Namespace .Values.existingSecret }}
checksum/secret: {{ toJson (dict "data" (get $found "data") "revision" .Values.existingSecretRevision) | sha256sum }}
{{- else }}
checksum/secret: {{ toJson .Values.secrets | sha256sum }}
{{- end }}
{{- end -}}

{{/* The chart's own Secret must hold what the product cannot start without: fail at render. */}}
{{- define "ap.requireSecrets" -}}
{{- if not .Values.existingSecret }}
{{- range $key := list "SECRET_KEY" "DATABASE_URL" "REDIS_URL" }}
{{- $_ := required (printf "secrets.%s is required (or name an existingSecret that holds it)" $key) (get $.Values.secrets $key) }}
{{- end }}
{{- if lt (len .Values.secrets.SECRET_KEY) 50 }}
{{- fail "secrets.SECRET_KEY must be 50 characters or more (openssl rand -hex 32)" }}
{{- end }}
{{- if .Values.flower.enabled }}
{{- $_ := required "secrets.FLOWER_BASIC_AUTH (admin:<12+ characters>) is required while flower.enabled" .Values.secrets.FLOWER_BASIC_AUTH }}
{{- end }}
{{- if .Values.pgbouncer.enabled }}
{{- $_ := required "secrets.PGBOUNCER_USERLIST (\"user\" \"password\", PgBouncer's auth_file) is required while pgbouncer.enabled" .Values.secrets.PGBOUNCER_USERLIST }}
{{- end }}
{{- end }}
{{- end -}}

{{/* keda.enabled needs KEDA's CRDs: fail at render rather than at apply (or never scale). */}}
{{- define "ap.requireKeda" -}}
{{- if and .Values.keda.enabled (not .Values.keda.skipCapabilityCheck) (not (.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject")) }}
{{- fail "keda.enabled is true but this cluster has no keda.sh/v1alpha1 ScaledObject: install KEDA 2.x first, or set keda.enabled=false (the workers then run their minReplicas). For `helm template` pass --api-versions keda.sh/v1alpha1/ScaledObject" }}
{{- end }}
{{- end -}}

{{/* Trace archives must outlive the pod: a bucket, a claim, or an explicit `archive.ephemeral`. */}}
{{- define "ap.requireArchive" -}}
{{- if not (or .Values.archive.s3.bucket .Values.archive.existingClaim .Values.archive.ephemeral) }}
{{- fail "archive: set archive.s3.bucket (object storage), archive.existingClaim (a volume), or archive.ephemeral=true (archives lost with the pod): agents/retention.py deletes traces from Postgres once archived" }}
{{- end }}
{{- end -}}
