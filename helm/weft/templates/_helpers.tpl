{{- define "weft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "weft.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "weft.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "weft.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/part-of: weft
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "weft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weft.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Address of a component's gRPC service inside the cluster. */}}
{{- define "weft.addr" -}}
{{ include "weft.fullname" .root }}-{{ .component }}:{{ .port }}
{{- end -}}

{{/* Environment shared by every component. */}}
{{- define "weft.env" -}}
- name: WEFT_HOST
  value: "0.0.0.0"
- name: WEFT_DAG_BUILDER_ADDR
  value: {{ include "weft.addr" (dict "root" .root "component" "dag-builder" "port" .root.Values.dagBuilder.port) | quote }}
- name: WEFT_EXECUTOR_ADDR
  value: {{ include "weft.addr" (dict "root" .root "component" "executor" "port" .root.Values.executor.port) | quote }}
- name: WEFT_STATE_ADDR
  value: {{ include "weft.addr" (dict "root" .root "component" "state" "port" .root.Values.state.port) | quote }}
{{- if .root.Values.global.databaseUrlSecret }}
- name: WEFT_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.global.databaseUrlSecret }}
      key: databaseUrl
{{- else if .root.Values.global.databaseUrl }}
- name: WEFT_DATABASE_URL
  value: {{ .root.Values.global.databaseUrl | quote }}
{{- end }}
{{- with .root.Values.global.redisUrl }}
- name: WEFT_REDIS_URL
  value: {{ . | quote }}
{{- end }}
- name: WEFT_ENV_ALLOW
  value: {{ .root.Values.global.envAllow | quote }}
- name: WEFT_LOG_JSON
  value: {{ .root.Values.global.logJson | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "weft-%s" .component | quote }}
{{- if .root.Values.global.metricsPort }}
- name: WEFT_METRICS_PORT
  value: {{ .root.Values.global.metricsPort | quote }}
{{- end }}
{{- with .root.Values.global.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .root.Values.global.otlpProtocol }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ . | quote }}
{{- end }}
{{- range $k, $v := .values.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/* A Deployment and a Service for one component.
     Args: root, component (dns name), values (the component's values), module (python -m), grpc (bool). */}}
{{- define "weft.component" -}}
{{- $img := merge (dict) .values.image .root.Values.image -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "weft.fullname" .root }}-{{ .component }}
  labels:
    {{- include "weft.labels" .root | nindent 4 }}
    {{- include "weft.selectorLabels" . | nindent 4 }}
spec:
  replicas: {{ .values.replicaCount }}
  selector:
    matchLabels:
      {{- include "weft.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "weft.selectorLabels" . | nindent 8 }}
      {{- if .root.Values.global.metricsPort }}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .root.Values.global.metricsPort | quote }}
        prometheus.io/path: /metrics
      {{- end }}
    spec:
      {{- with .root.Values.global.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ .component }}
          image: "{{ with .root.Values.global.imageRegistry }}{{ . }}/{{ end }}{{ $img.repository }}-{{ .component }}:{{ $img.tag | default .root.Chart.AppVersion }}"
          imagePullPolicy: {{ $img.pullPolicy }}
          env:
            {{- include "weft.env" . | nindent 12 }}
            - name: WEFT_PORT
              value: {{ .values.port | quote }}
            {{- with .values.apiTokensSecret }}
            - name: WEFT_API_TOKENS
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: apiTokens
            {{- end }}
          ports:
            - name: {{ if .grpc }}grpc{{ else }}http{{ end }}
              containerPort: {{ .values.port }}
            {{- if .root.Values.global.metricsPort }}
            - name: metrics
              containerPort: {{ .root.Values.global.metricsPort }}
            {{- end }}
          {{- if .grpc }}
          readinessProbe:
            grpc:
              port: {{ .values.port }}
          livenessProbe:
            grpc:
              port: {{ .values.port }}
            periodSeconds: 20
          {{- else }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
          {{- end }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          resources:
            {{- toYaml .values.resources | nindent 12 }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "weft.fullname" .root }}-{{ .component }}
  labels:
    {{- include "weft.labels" .root | nindent 4 }}
    {{- include "weft.selectorLabels" . | nindent 4 }}
spec:
  type: {{ if .grpc }}ClusterIP{{ else }}{{ .values.service.type }}{{ end }}
  selector:
    {{- include "weft.selectorLabels" . | nindent 4 }}
  ports:
    - name: {{ if .grpc }}grpc{{ else }}http{{ end }}
      port: {{ .values.port }}
      targetPort: {{ .values.port }}
{{- end -}}
