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
