{{/* Names and labels shared by our templates (the subcharts have their own). */}}

{{- define "geoportal.labels" -}}
app.kubernetes.io/name: geoportal
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "geoportal.selectorLabels" -}}
app.kubernetes.io/name: geoportal
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The claim every pod mounts: an existing one, or the one this chart creates. */}}
{{- define "geoportal.claimName" -}}
{{- .Values.storage.existingClaim | default .Values.storage.claimName -}}
{{- end }}

{{- define "geoportal.serviceImage" -}}
{{- printf "%s:%s" .Values.images.service.repository .Values.images.service.tag -}}
{{- end }}

{{/*
The WPS job log. SQLite is a file on one pod's disk: two replicas would each see half
of the jobs and lose status documents, so more than one replica needs PostgreSQL.
*/}}
{{- define "geoportal.wps.databaseSecret" -}}
{{- if .Values.wps.database.existingSecret -}}
{{- .Values.wps.database.existingSecret -}}
{{- else if .Values.wps.database.url -}}
geoportal-wps-database
{{- end -}}
{{- end }}

{{- define "geoportal.wps.checkDatabase" -}}
{{- $url := .Values.wps.database.url -}}
{{- $external := or .Values.wps.database.existingSecret (hasPrefix "postgresql" $url) -}}
{{- if and $url (not (or (hasPrefix "postgresql" $url) (hasPrefix "sqlite" $url))) -}}
{{- fail (printf "wps.database.url must be a postgresql:// (or sqlite://) URL, got %q" $url) -}}
{{- end -}}
{{- if and (gt (int .Values.wps.replicas) 1) (not $external) -}}
{{- fail (printf "wps.replicas is %d but the WPS job log is SQLite: set wps.database.url to a postgresql:// URL (or wps.database.existingSecret), or use wps.replicas: 1" (int .Values.wps.replicas)) -}}
{{- end -}}
{{- end }}

{{/* The hub-service environment HubAuth/HubOAuth read (JupyterHub's external-service contract). */}}
{{- define "geoportal.hubServiceEnv" -}}
- name: JUPYTERHUB_SERVICE_NAME
  value: {{ .name | quote }}
- name: JUPYTERHUB_SERVICE_URL
  value: {{ printf "http://0.0.0.0:%d" (int .port) | quote }}
- name: JUPYTERHUB_SERVICE_PREFIX
  value: {{ .prefix | quote }}
- name: JUPYTERHUB_API_URL
  value: {{ .apiUrl | quote }}
- name: JUPYTERHUB_BASE_URL
  value: "/"
- name: JUPYTERHUB_CLIENT_ID
  value: {{ printf "service-%s" .name | quote }}
- name: JUPYTERHUB_OAUTH_CALLBACK_URL
  value: {{ printf "%soauth_callback" .prefix | quote }}
- name: JUPYTERHUB_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .token.secretName }}
      key: {{ .token.secretKey }}
{{- end }}

{{/* Security context of our service containers: non-root, nothing to escalate. */}}
{{- define "geoportal.containerSecurity" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "geoportal.podSecurity" -}}
runAsUser: {{ .Values.storage.serviceUid }}
runAsGroup: {{ .Values.storage.serviceGid }}
fsGroup: {{ .Values.storage.serviceGid }}
fsGroupChangePolicy: OnRootMismatch
{{- end }}

{{/* Egress every service needs: DNS and the hub API, plus the operator's rules. */}}
{{- define "geoportal.commonEgress" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
- to:
    - podSelector:
        matchLabels:
          app: jupyterhub
          component: hub
  ports:
    - port: 8081
      protocol: TCP
{{- with .Values.networkPolicy.egress }}
{{ toYaml . }}
{{- end }}
{{- end }}
