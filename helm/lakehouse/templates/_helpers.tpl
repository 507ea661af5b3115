{{/* The native stack's facts: ports, topic, namespaces, principals, secret keys. */}}
{{- define "lakehouse.facts" -}}
{{- .Files.Get "platform.json" -}}
{{- end }}

{{- define "lakehouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lakehouse.fullname" -}}
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

{{/* A component's resource name: <fullname>-<component>, at most 63 characters. */}}
{{- define "lakehouse.component" -}}
{{- $full := include "lakehouse.fullname" .root | trunc (int (sub 62 (len .name))) | trimSuffix "-" }}
{{- printf "%s-%s" $full .name }}
{{- end }}

{{- define "lakehouse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lakehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lakehouse.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "lakehouse.labels" -}}
helm.sh/chart: {{ include "lakehouse.chart" .root }}
{{ include "lakehouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: lakehouse
{{- end }}

{{/* An image reference: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "lakehouse.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if eq (toString $tag) "latest" }}
{{- fail (printf "%s: pin a version, not latest" .image.repository) }}
{{- end }}
{{- printf "%s:%s" .image.repository (toString $tag) }}
{{- end }}

{{- define "lakehouse.ownImage" -}}
{{- include "lakehouse.image" (dict "root" . "image" .Values.image) }}
{{- end }}

{{/* The Secrets the release reads and never writes (made by `lakehouse deploy secret` and
the TLS commands of the README, or by the platform's own secret management). */}}
{{- define "lakehouse.secretName" -}}
{{- default (include "lakehouse.component" (dict "root" . "name" "credentials")) .Values.credentials.existingSecret }}
{{- end }}

{{- define "lakehouse.tlsSecretName" -}}
{{- default (include "lakehouse.component" (dict "root" . "name" "trino-tls")) .Values.tls.existingSecret }}
{{- end }}

{{/* Whether connections to the in-cluster servers use TLS ("true" or ""). */}}
{{- define "lakehouse.internalTls" -}}
{{- if .Values.tls.internal }}true{{ end }}
{{- end }}

{{/* The names the platform certificate must cover with `tls.internal`: every Service
clients reach an in-cluster server by (and each Kafka broker by its own name). */}}
{{- define "lakehouse.tlsHosts" -}}
{{- $hosts := list (include "lakehouse.trinoHost" .) }}
{{- $hosts = append $hosts (printf "%s.%s.svc" (include "lakehouse.trinoHost" .) .Release.Namespace) }}
{{- $hosts = append $hosts (include "lakehouse.component" (dict "root" . "name" "nessie")) }}
{{- if .Values.postgres.enabled }}
{{- $hosts = append $hosts (include "lakehouse.component" (dict "root" . "name" "postgres")) }}
{{- end }}
{{- if .Values.minio.enabled }}
{{- $hosts = append $hosts (include "lakehouse.component" (dict "root" . "name" "minio")) }}
{{- end }}
{{- if .Values.kafka.enabled }}
{{- $name := include "lakehouse.component" (dict "root" . "name" "kafka") }}
{{- $headless := include "lakehouse.component" (dict "root" . "name" "kafka-headless") }}
{{- range $i := until (int .Values.kafka.replicas) }}
{{- $hosts = append $hosts (printf "%s-%d.%s" $name $i $headless) }}
{{- end }}
{{- end }}
{{- join " " $hosts }}
{{- end }}

{{/* Where clients reach each server: in the release, or the external endpoint. */}}
{{- define "lakehouse.postgresHost" -}}
{{- if .Values.postgres.enabled }}{{ include "lakehouse.component" (dict "root" . "name" "postgres") }}{{ else }}{{ required "postgres.external.host is required when postgres.enabled is false" .Values.postgres.external.host }}{{ end }}
{{- end }}

{{- define "lakehouse.postgresPort" -}}
{{- $facts := include "lakehouse.facts" . | fromJson }}
{{- if .Values.postgres.enabled }}{{ $facts.components.postgres.port }}{{ else }}{{ .Values.postgres.external.port }}{{ end }}
{{- end }}

{{- define "lakehouse.postgresSuperuser" -}}
{{- $facts := include "lakehouse.facts" . | fromJson }}
{{- if .Values.postgres.enabled }}{{ $facts.postgres.superuser }}{{ else }}{{ .Values.postgres.external.superuser }}{{ end }}
{{- end }}

{{- define "lakehouse.s3Endpoint" -}}
{{- $facts := include "lakehouse.facts" . | fromJson }}
{{- if .Values.minio.enabled }}{{ printf "%s://%s:%v" (ternary "https" "http" (eq (include "lakehouse.internalTls" .) "true")) (include "lakehouse.component" (dict "root" . "name" "minio")) $facts.components.minio.port }}{{ else }}{{ required "minio.external.endpoint is required when minio.enabled is false" .Values.minio.external.endpoint }}{{ end }}
{{- end }}

{{- define "lakehouse.s3Region" -}}
{{- $facts := include "lakehouse.facts" . | fromJson }}
{{- if .Values.minio.enabled }}{{ $facts.lake.region }}{{ else }}{{ .Values.minio.external.region }}{{ end }}
{{- end }}

{{- define "lakehouse.kafkaBootstrap" -}}
{{- $facts := include "lakehouse.facts" . | fromJson }}
{{- if .Values.kafka.enabled }}
{{- $name := include "lakehouse.component" (dict "root" . "name" "kafka") }}
{{- $headless := include "lakehouse.component" (dict "root" . "name" "kafka-headless") }}
{{- $servers := list }}
{{- range $i := until (int .Values.kafka.replicas) }}
{{- $servers = append $servers (printf "%s-%d.%s:%v" $name $i $headless $facts.components.kafka.port) }}
{{- end }}
{{- join "," $servers }}
{{- else }}
{{- required "kafka.external.bootstrapServers is required when kafka.enabled is false" .Values.kafka.external.bootstrapServers }}
{{- end }}
{{- end }}

{{- define "lakehouse.trinoHost" -}}
{{- include "lakehouse.component" (dict "root" . "name" "trino") }}
{{- end }}

{{/* Pod-level settings every pod shares: `root`, and `pod`, the component's overrides
of the global scheduling and identity values. */}}
{{- define "lakehouse.podSpecCommon" -}}
{{- $root := .root }}
{{- $pod := .pod | default dict }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
serviceAccountName: {{ $pod.serviceAccountName | default (include "lakehouse.serviceAccountName" $root) }}
# The API is never called; a workload identity webhook (IRSA, Azure) mounts its own token.
automountServiceAccountToken: false
{{- with ($pod.priorityClassName | default $root.Values.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- with ($pod.nodeSelector | default $root.Values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($pod.tolerations | default $root.Values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($pod.affinity | default $root.Values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($pod.topologySpreadConstraints | default $root.Values.topologySpreadConstraints) }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A pod's labels and annotations: the chart's (`annotations`, YAML lines such as the
checksums), then the component's podLabels and podAnnotations (`pod`) over the global ones. */}}
{{- define "lakehouse.podMetadata" -}}
{{- $root := .root }}
{{- $pod := .pod | default dict }}
{{- $labels := merge (dict) ($pod.podLabels | default dict) ($root.Values.podLabels | default dict) }}
{{- $annotations := merge (dict) ($pod.podAnnotations | default dict) ($root.Values.podAnnotations | default dict) }}
labels:
  {{- with $labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- include "lakehouse.labels" (dict "root" $root "name" .name) | nindent 2 }}
{{- if or .annotations $annotations }}
annotations:
  {{- with .annotations }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with $annotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "lakehouse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lakehouse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lakehouse.podSecurityContext" -}}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
  runAsUser: {{ .uid }}
  runAsGroup: {{ .uid }}
  fsGroup: {{ .uid }}
{{- end }}

{{- define "lakehouse.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end }}

{{/* The settings of the platform's own services, and where their secrets are. */}}
{{- define "lakehouse.ownEnv" -}}
envFrom:
  - configMapRef:
      name: {{ include "lakehouse.component" (dict "root" . "name" "env") }}
{{- end }}

{{- define "lakehouse.ownVolumeMounts" -}}
- name: home
  mountPath: {{ (include "lakehouse.facts" . | fromJson).paths.home }}
- name: tmp
  mountPath: /tmp
- name: credentials
  mountPath: {{ (include "lakehouse.facts" . | fromJson).paths.credentials }}
  readOnly: true
- name: trino-ca
  mountPath: {{ (include "lakehouse.facts" . | fromJson).paths.home }}/tls/ca.pem
  subPath: ca.crt
  readOnly: true
{{- include "lakehouse.caVolumeMounts" (dict "root" . "servers" (list "postgres" "kafka" "minio" "nessie")) }}
{{- end }}

{{- define "lakehouse.ownVolumes" -}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
- name: credentials
  secret:
    secretName: {{ include "lakehouse.secretName" . }}
    defaultMode: 0400
- name: trino-ca
  secret:
    secretName: {{ include "lakehouse.tlsSecretName" . }}
    items:
      - key: ca.crt
        path: ca.crt
{{- include "lakehouse.caVolumes" (dict "root" . "servers" (list "postgres" "kafka" "minio" "nessie")) }}
{{- end }}

{{/* Annotations that roll a pod when its configuration changes. The Secrets are the
operator's: after rotating one, roll the pods (`kubectl rollout restart`). */}}
{{- define "lakehouse.checksums" -}}
checksum/env: {{ include (print .Template.BasePath "/configmap-env.yaml") . | sha256sum }}
{{- end }}

{{/* A secret value from the release's Secret, for a server's environment. */}}
{{- define "lakehouse.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "lakehouse.secretName" .root }}
      key: {{ .key }}
{{- end }}

{{/* Trino settings coordinator and workers share, authenticated by the shared secret.
With `tls.internal`, nodes talk HTTPS only: Trino's automatic internal TLS gives each
node a certificate for its own address from a CA derived from the shared secret (pods'
addresses are known only once they run, so no certificate made beforehand could name
them), and the nodes announce themselves by address. Workers find the coordinator
through a headless Service, whose name resolves to the coordinator's own address, on its
HTTPS port. Without it, nodes talk plain HTTP on a port only Trino pods may reach. */}}
{{- define "lakehouse.trinoCommon" -}}
{{- $facts := include "lakehouse.facts" . | fromJson -}}
{{- if eq (include "lakehouse.internalTls" .) "true" -}}
discovery.uri=https://{{ include "lakehouse.component" (dict "root" . "name" "trino-internal") }}:{{ $facts.components.trino.port }}
http-server.http.enabled=false
internal-communication.https.required=true
internal-communication.shared-secret=${ENV:LAKEHOUSE_TRINO_SHARED_SECRET}
{{- else -}}
discovery.uri=http://{{ include "lakehouse.component" (dict "root" . "name" "trino-internal") }}:{{ $facts.ports.trinoInternal }}
http-server.http.enabled=true
http-server.http.port={{ $facts.ports.trinoInternal }}
internal-communication.shared-secret=${ENV:LAKEHOUSE_TRINO_SHARED_SECRET}
node.internal-address-source=IP
{{- end }}
spill-enabled=true
spiller-spill-path=/data/trino/spill
http-server.log.enabled=false
{{- end }}

{{/* A Trino pod: `role` is coordinator or worker. */}}
{{- define "lakehouse.trinoPod" -}}
{{- $root := .root }}
{{- $role := .role }}
{{- $facts := include "lakehouse.facts" $root | fromJson }}
{{- $settings := ternary $root.Values.trino.coordinator $root.Values.trino.worker (eq $role "coordinator") }}
{{- $component := ternary "trino" "trino-worker" (eq $role "coordinator") }}
{{- $tls := eq (include "lakehouse.internalTls" $root) "true" }}
{{- $truststore := "/etc/trino/security/truststore.p12" }}
{{- $checksums := printf "%s\nchecksum/config: %s" (include "lakehouse.checksums" $root) (include (print $root.Template.BasePath "/trino-config.yaml") $root | sha256sum) }}
metadata:
  {{- include "lakehouse.podMetadata" (dict "root" $root "name" $component "pod" $settings.pod "annotations" $checksums) | nindent 2 }}
spec:
  {{- include "lakehouse.podSpecCommon" (dict "root" $root "pod" $settings.pod) | nindent 2 }}
  {{- include "lakehouse.podSecurityContext" (dict "root" $root "uid" $root.Values.trino.runAsUser) | nindent 2 }}
  initContainers:
    # Trino's files from the ConfigMap and the Secret: hashes of the passwords, never
    # the passwords, and the certificate with its key.
    - name: prepare
      image: {{ include "lakehouse.ownImage" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      {{- include "lakehouse.containerSecurityContext" $root | nindent 6 }}
      {{- include "lakehouse.ownEnv" $root | nindent 6 }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
      command:
        - sh
        - -ec
        - |
          cp /config/node.properties /config/log.properties /etc/trino/
          printf 'node.id=%s\n' "$POD_NAME" >> /etc/trino/node.properties
          cp /config/{{ $role }}.properties /etc/trino/config.properties
          printf '%s\n' -server -Xmx{{ $settings.heap }} -Xms{{ $settings.heap }} -XX:+UseG1GC \
            -XX:G1HeapRegionSize=32M -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError \
            -XX:-OmitStackTraceInFastThrow -XX:ReservedCodeCacheSize=512M \
            -Djdk.attach.allowAttachSelf=true -Djdk.nio.maxCachedBufferSize=2000000 \
            -Dfile.encoding=UTF-8 -XX:+EnableDynamicAgentLoading -Djava.io.tmpdir=/tmp \
            > /etc/trino/jvm.config
          {{- if $tls }}
          # Nessie's and MinIO's certificates are the platform's: the JVM trusts its CA
          # (the trust store itself is written where keytool is, in Trino's image).
          printf '%s\n' {{ include "lakehouse.javaTruststoreOptions" $truststore }} >> /etc/trino/jvm.config
          {{- end }}
          mkdir -p /etc/trino/security /etc/trino/catalog
          lakehouse deploy nessie-token --principal trino --out /etc/trino/nessie-token
          {{- if eq $role "coordinator" }}
          cp /config/password-authenticator.properties /config/group-provider.properties \
            /config/access-control.properties /etc/trino/
          {{- if $root.Values.audit.enabled }}
          cp /config/http-event-listener.properties /etc/trino/
          {{- end }}
          cp /config/{{ $facts.lake.catalog }}.properties /config/pg.properties /etc/trino/catalog/
          lakehouse deploy trino-security --out /etc/trino/security
          cat /etc/trino/tls/tls.crt /etc/trino/tls/tls.key > /etc/trino/security/tls.pem
          chmod 600 /etc/trino/security/tls.pem
          {{- end }}
      resources:
        {{- toYaml $root.Values.bootstrap.resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /config
          readOnly: true
        - name: etc
          mountPath: /etc/trino
        - name: tls
          mountPath: /etc/trino/tls
          readOnly: true
        {{- include "lakehouse.ownVolumeMounts" $root | nindent 8 }}
  containers:
    - name: trino
      image: {{ include "lakehouse.image" (dict "root" $root "image" $root.Values.trino.image) }}
      imagePullPolicy: IfNotPresent
      {{- include "lakehouse.containerSecurityContext" $root | nindent 6 }}
      # Nessie's token, minted by the prepare step (the catalogs read it as an ENV secret).
      command:
        - sh
        - -ec
        - |
          {{- if $tls }}
          {{- include "lakehouse.javaTruststore" (dict "out" $truststore "ca" "/etc/trino/tls/ca.crt") | nindent 10 }}
          {{- end }}
          export LAKEHOUSE_NESSIE_TOKEN="$(cat /etc/trino/nessie-token)"
          exec /usr/lib/trino/bin/run-trino
      env:
        {{- if ne (include "lakehouse.s3Ambient" $root) "true" }}
        {{- include "lakehouse.secretEnv" (dict "root" $root "env" "LAKEHOUSE_S3_SECRET_KEY" "key" "minio-keys.trino") | nindent 8 }}
        {{- end }}
        {{- include "lakehouse.secretEnv" (dict "root" $root "env" "LAKEHOUSE_PG_PASSWORD" "key" (printf "database-passwords.%s" $facts.postgres.readerRole)) | nindent 8 }}
        {{- include "lakehouse.secretEnv" (dict "root" $root "env" "LAKEHOUSE_TRINO_SHARED_SECRET" "key" "trino-shared-secret") | nindent 8 }}
        {{- include "lakehouse.secretEnv" (dict "root" $root "env" "AUDIT_TOKEN" "key" "audit-token") | nindent 8 }}
      {{- /* With internal TLS the coordinator has one port (HTTPS, clients and nodes),
      a worker one HTTPS port of its own; without, both also listen on the internal port. */}}
      {{- $probePort := ternary (ternary "https" "internal" (eq $role "coordinator")) "internal" $tls }}
      ports:
        {{- if eq $role "coordinator" }}
        - name: https
          containerPort: {{ $facts.components.trino.port }}
        {{- end }}
        {{- if or (not $tls) (eq $role "worker") }}
        - name: internal
          containerPort: {{ $facts.ports.trinoInternal }}
        {{- end }}
      # Liveness starts once the server answers: loading plugins takes minutes on a busy node.
      startupProbe:
        httpGet:
          path: /v1/info
          port: {{ $probePort }}
          {{- if $tls }}
          scheme: HTTPS
          {{- end }}
        periodSeconds: 5
        failureThreshold: 60
      readinessProbe:
        httpGet:
          path: /v1/info
          port: {{ $probePort }}
          {{- if $tls }}
          scheme: HTTPS
          {{- end }}
        periodSeconds: 5
      livenessProbe:
        httpGet:
          path: /v1/info
          port: {{ $probePort }}
          {{- if $tls }}
          scheme: HTTPS
          {{- end }}
        periodSeconds: 10
        failureThreshold: 6
      resources:
        {{- toYaml $settings.resources | nindent 8 }}
      volumeMounts:
        - name: etc
          mountPath: /etc/trino
        - name: tls
          mountPath: /etc/trino/tls
          readOnly: true
        - name: data
          mountPath: /data/trino
        - name: tmp
          mountPath: /tmp
        {{- include "lakehouse.caVolumeMounts" (dict "root" $root "servers" (list "postgres")) | nindent 8 }}
  volumes:
    - name: config
      configMap:
        name: {{ include "lakehouse.trinoHost" $root }}
    - name: etc
      emptyDir: {}
    - name: data
      emptyDir: {}
    - name: tls
      secret:
        secretName: {{ include "lakehouse.tlsSecretName" $root }}
    {{- include "lakehouse.ownVolumes" $root | nindent 4 }}
{{- end }}

{{/* A Deployment of one of our services: `name`, `args` (of `lakehouse`), `port` (the
one it serves, with `probePath` for an HTTP probe, else a TCP probe), `replicas`,
`resources`, `pod` (the component's scheduling and identity overrides), and `recreate`
for a loop that must never run twice at once. */}}
{{- define "lakehouse.ownDeployment" -}}
{{- $root := .root }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "lakehouse.component" (dict "root" $root "name" .name) }}
  labels:
    {{- include "lakehouse.labels" (dict "root" $root "name" .name) | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ .replicas }}
  {{- end }}
  {{- if .recreate }}
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "lakehouse.selectorLabels" (dict "root" $root "name" .name) | nindent 6 }}
  template:
    metadata:
      {{- include "lakehouse.podMetadata" (dict "root" $root "name" .name "pod" .pod "annotations" (include "lakehouse.checksums" $root)) | nindent 6 }}
    spec:
      {{- include "lakehouse.podSpecCommon" (dict "root" $root "pod" .pod) | nindent 6 }}
      {{- include "lakehouse.podSecurityContext" (dict "root" $root "uid" 10001) | nindent 6 }}
      terminationGracePeriodSeconds: 60
      containers:
        - name: {{ .name }}
          image: {{ include "lakehouse.ownImage" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          {{- include "lakehouse.containerSecurityContext" $root | nindent 10 }}
          args: {{ toJson .args }}
          {{- include "lakehouse.ownEnv" $root | nindent 10 }}
          {{- with .env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: {{ .portName | default "http" }}
              containerPort: {{ .port }}
          readinessProbe:
            {{- if .probePath }}
            httpGet:
              path: {{ .probePath }}
              port: {{ .portName | default "http" }}
            {{- else }}
            tcpSocket:
              port: {{ .portName | default "http" }}
            {{- end }}
            periodSeconds: 5
          livenessProbe:
            {{- if .probePath }}
            httpGet:
              path: {{ .probePath }}
              port: {{ .portName | default "http" }}
            {{- else }}
            tcpSocket:
              port: {{ .portName | default "http" }}
            {{- end }}
            initialDelaySeconds: 20
            periodSeconds: 10
            failureThreshold: 6
          resources:
            {{- toYaml .resources | nindent 12 }}
          volumeMounts:
            {{- include "lakehouse.ownVolumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "lakehouse.ownVolumes" $root | nindent 8 }}
{{- end }}

{{/* Superset's pod: our image writes its runtime file (addresses, secrets), then the
Superset image runs `command`. */}}
{{- define "lakehouse.supersetPod" -}}
{{- $root := .root }}
{{- $facts := include "lakehouse.facts" $root | fromJson }}
{{- $home := $facts.paths.home }}
metadata:
  {{- include "lakehouse.podMetadata" (dict "root" $root "name" .component "pod" $root.Values.superset.pod "annotations" (include "lakehouse.checksums" $root)) | nindent 2 }}
spec:
  {{- include "lakehouse.podSpecCommon" (dict "root" $root "pod" $root.Values.superset.pod) | nindent 2 }}
  {{- include "lakehouse.podSecurityContext" (dict "root" $root "uid" $root.Values.superset.runAsUser) | nindent 2 }}
  {{- with .restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  initContainers:
    - name: runtime
      image: {{ include "lakehouse.ownImage" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      {{- include "lakehouse.containerSecurityContext" $root | nindent 6 }}
      {{- include "lakehouse.ownEnv" $root | nindent 6 }}
      args: ["deploy", "superset-runtime", "--out", "/runtime/runtime.json",
             "--assets", "/app/lakehouse/superset/assets", "--data-dir", "/app/superset_home"]
      resources:
        {{- toYaml $root.Values.bootstrap.resources | nindent 8 }}
      volumeMounts:
        - name: runtime
          mountPath: /runtime
        {{- include "lakehouse.ownVolumeMounts" $root | nindent 8 }}
  containers:
    - name: superset
      image: {{ include "lakehouse.image" (dict "root" $root "image" $root.Values.superset.image) }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      {{- include "lakehouse.containerSecurityContext" $root | nindent 6 }}
      command: {{ toJson .command }}
      env:
        - name: SUPERSET_CONFIG_PATH
          value: /app/lakehouse/superset/superset_config.py
        - name: LAKEHOUSE_SUPERSET_RUNTIME
          value: /runtime/runtime.json
        - name: FLASK_APP
          value: "superset.app:create_app()"
        - name: PYTHONDONTWRITEBYTECODE
          value: "1"
        {{- with include "lakehouse.postgresSslmode" $root }}
        - name: PGSSLMODE
          value: {{ . | quote }}
        {{- if hasKey (include "lakehouse.serverCas" (dict "root" $root "servers" (list "postgres")) | fromJson) "postgres" }}
        - name: PGSSLROOTCERT
          value: {{ include "lakehouse.caPath" "postgres" }}
        {{- end }}
        {{- end }}
      {{- if .serve }}
      ports:
        - name: http
          containerPort: {{ $facts.components.superset.port }}
      readinessProbe:
        httpGet:
          path: /health
          port: http
        periodSeconds: 5
      livenessProbe:
        httpGet:
          path: /health
          port: http
        initialDelaySeconds: 60
        periodSeconds: 10
        failureThreshold: 6
      {{- end }}
      resources:
        {{- toYaml $root.Values.superset.resources | nindent 8 }}
      volumeMounts:
        - name: runtime
          mountPath: /runtime
          readOnly: true
        - name: home
          mountPath: /app/superset_home
        - name: tmp
          mountPath: /tmp
        - name: trino-ca
          mountPath: {{ $home }}/tls/ca.pem
          subPath: ca.crt
          readOnly: true
        {{- include "lakehouse.caVolumeMounts" (dict "root" $root "servers" (list "postgres")) | nindent 8 }}
  volumes:
    - name: runtime
      emptyDir:
        medium: Memory
    {{- include "lakehouse.ownVolumes" $root | nindent 4 }}
{{- end }}

{{/* S3 requests: path-style for the release's MinIO, as asked for an external store. */}}
{{- define "lakehouse.s3PathStyle" -}}
{{- if .Values.minio.enabled }}true{{ else }}{{ .Values.minio.external.pathStyle }}{{ end }}
{{- end }}

{{/* Whether S3 requests are signed with the cloud's credentials of the pods'
ServiceAccount (a workload identity) rather than keys from the Secret. */}}
{{- define "lakehouse.s3Ambient" -}}
{{- and (not .Values.minio.enabled) (eq .Values.minio.external.auth "workloadIdentity") }}
{{- end }}

{{/* The access key id of the platform's S3 key `name`: the name itself on the release's
MinIO (the bootstrap makes the keys), the operator's id on an external store. */}}
{{- define "lakehouse.s3KeyId" -}}
{{- if .root.Values.minio.enabled }}{{ .name }}{{ else }}{{ index .root.Values.minio.external.accessKeyIds .name | default .name }}{{ end }}
{{- end }}

{{/* Where clients find the CA of each server they verify (mounted from the operator's
Secret or ConfigMap, or the platform certificate's; see lakehouse.caVolumes). */}}
{{- define "lakehouse.caPath" -}}
/etc/lakehouse/ca/{{ . }}.crt
{{- end }}

{{/* The CAs of the servers a pod verifies: `servers`, a list of "postgres", "kafka",
"minio" and "nessie". An external PostgreSQL or Kafka: the CA its values name. An
in-cluster server with `tls.internal`: the platform certificate's `ca.crt`. */}}
{{- define "lakehouse.serverCas" -}}
{{- $root := .root }}
{{- $internal := eq (include "lakehouse.internalTls" $root) "true" }}
{{- $platform := dict "secretName" (include "lakehouse.tlsSecretName" $root) "key" "ca.crt" }}
{{- $found := dict }}
{{- range .servers }}
{{- $server := index $root.Values . }}
{{- $inCluster := or (eq . "nessie") (and (hasKey $server "enabled") $server.enabled) }}
{{- if and $inCluster $internal }}
{{- $_ := set $found . $platform }}
{{- else if and (not $inCluster) (hasKey $server "external") (hasKey $server.external "ca") }}
{{- if or $server.external.ca.secretName $server.external.ca.configMapName }}
{{- $_ := set $found . $server.external.ca }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $found }}
{{- end }}

{{- define "lakehouse.caVolumeMounts" -}}
{{- range $server, $ca := include "lakehouse.serverCas" . | fromJson }}
- name: {{ $server }}-ca
  mountPath: {{ include "lakehouse.caPath" $server }}
  subPath: {{ $ca.key }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "lakehouse.caVolumes" -}}
{{- range $server, $ca := include "lakehouse.serverCas" . | fromJson }}
- name: {{ $server }}-ca
  {{- if $ca.secretName }}
  secret:
    secretName: {{ $ca.secretName }}
  {{- else }}
  configMap:
    name: {{ $ca.configMapName }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The libpq/JDBC sslmode of every PostgreSQL client: the external server's, or
`verify-full` for the in-cluster one with `tls.internal`; empty: libpq's default. */}}
{{- define "lakehouse.postgresSslmode" -}}
{{- if not .Values.postgres.enabled }}{{ .Values.postgres.external.sslmode }}
{{- else if eq (include "lakehouse.internalTls" .) "true" }}verify-full
{{- end }}
{{- end }}

{{/* JDBC URL parameters for PostgreSQL (Nessie, Trino): the sslmode, and the server's CA
when one is mounted. */}}
{{- define "lakehouse.postgresJdbcParams" -}}
{{- with include "lakehouse.postgresSslmode" . }}
{{- $params := list (printf "sslmode=%s" .) }}
{{- if hasKey (include "lakehouse.serverCas" (dict "root" $ "servers" (list "postgres")) | fromJson) "postgres" }}
{{- $params = append $params (printf "sslrootcert=%s" (include "lakehouse.caPath" "postgres")) }}
{{- end }}
{{- printf "?%s" (join "&" $params) }}
{{- end }}
{{- end }}

{{/* Shell lines that write `out`, a PKCS#12 trust store for a JVM: the JDK's own CAs
plus `ca` (the platform's), for clients that take no CA file of their own (Nessie's and
Trino's S3 clients, Trino's Iceberg REST client). It holds certificates only, so its
password (the JDK's well-known default) guards nothing secret. */}}
{{- define "lakehouse.javaTruststore" -}}
keytool="${JAVA_HOME:?the image sets JAVA_HOME}/bin/keytool"
rm -f {{ .out }}
"$keytool" -importkeystore -noprompt -srckeystore "$JAVA_HOME/lib/security/cacerts" \
  -srcstorepass changeit -destkeystore {{ .out }} -deststoretype PKCS12 -deststorepass changeit >/dev/null
"$keytool" -importcert -noprompt -alias lakehouse-ca -file {{ .ca }} \
  -keystore {{ .out }} -storetype PKCS12 -storepass changeit >/dev/null
{{- end }}

{{/* The JVM options that make `path` (lakehouse.javaTruststore) the default trust store. */}}
{{- define "lakehouse.javaTruststoreOptions" -}}
-Djavax.net.ssl.trustStore={{ . }} -Djavax.net.ssl.trustStoreType=PKCS12 -Djavax.net.ssl.trustStorePassword=changeit
{{- end }}
