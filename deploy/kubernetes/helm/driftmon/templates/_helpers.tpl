{{/* The objects' name: the release name, with "-driftmon" unless it already says driftmon. */}}
{{- define "driftmon.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "driftmon" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-driftmon" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels. app.kubernetes.io/name stays "driftmon": the monitors take the `job` label
from it, and the alert rules select job="driftmon". */}}
{{- define "driftmon.selectorLabels" -}}
app.kubernetes.io/name: driftmon
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "driftmon.labels" -}}
{{ include "driftmon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The labels kube-prometheus-stack selects monitoring objects on. */}}
{{- define "driftmon.releaseLabel" -}}
{{- with .Values.monitoring.release -}}
release: {{ . | quote }}
{{- end -}}
{{- end -}}

{{- define "driftmon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "driftmon.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "driftmon.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* True when the results database is SQLite (its URL given in database.url). */}}
{{- define "driftmon.sqlite" -}}
{{- if hasPrefix "sqlite" .Values.database.url -}}true{{- end -}}
{{- end -}}

{{/* Refuse what cannot work, before anything is installed. */}}
{{- define "driftmon.validate" -}}
{{- if and .Values.database.url (not (include "driftmon.sqlite" .)) -}}
{{- fail "database.url: only a sqlite:// URL may be given in values; any other URL carries credentials: put it in a Secret and name it in database.existingSecret (key database.secretKey)" -}}
{{- end -}}
{{- if and (include "driftmon.sqlite" .) (gt (int .Values.replicaCount) 1) -}}
{{- fail (printf "replicaCount: %d replicas with a SQLite results database: SQLite allows one driftmon daemon per database file (a second is refused); set replicaCount: 1, or use PostgreSQL (database.existingSecret) for replicas" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and (not .Values.database.url) (not .Values.database.existingSecret) -}}
{{- fail "database.existingSecret: name the Secret that holds the results database URL (or set database.url to a sqlite:// URL for a single daemon)" -}}
{{- end -}}
{{- if hasKey (.Values.config.database | default dict) "url" -}}
{{- fail "config.database.url: the database URL never goes in the ConfigMap: use database.existingSecret (or database.url for SQLite)" -}}
{{- end -}}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled -}}
{{- fail "monitoring: enable serviceMonitor or podMonitor, not both (each replica would be scraped twice)" -}}
{{- end -}}
{{- end -}}

{{/* What the migration init container and driftmon share: image, environment, security, mounts. */}}
{{- define "driftmon.container" -}}
image: {{ include "driftmon.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  - name: DRIFTMON_CONFIG
    value: /etc/driftmon/config.yaml
  - name: DRIFTMON_LOG_FORMAT
    value: json
  - name: DRIFTMON_DATABASE_URL
    {{- if .Values.database.url }}
    value: {{ .Values.database.url | quote }}
    {{- else }}
    valueFrom:
      secretKeyRef:
        name: {{ .Values.database.existingSecret }}
        key: {{ .Values.database.secretKey }}
    {{- end }}
  {{- if and .Values.database.existingSecret .Values.database.sourceUrlKey }}
  - name: SOURCE_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ .Values.database.existingSecret }}
        key: {{ .Values.database.sourceUrlKey }}
        optional: true
  {{- end }}
  # The root filesystem is read-only: matplotlib (the /report charts) caches in /tmp.
  - name: MPLCONFIGDIR
    value: /tmp/matplotlib
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
volumeMounts:
  - name: config
    mountPath: /etc/driftmon
    readOnly: true
  - name: tmp
    mountPath: /tmp
  {{- if include "driftmon.sqlite" . }}
  - name: data
    mountPath: /var/lib/driftmon
  {{- end }}
{{- end -}}
