{{/* Names and labels shared by every object of the chart. */}}

{{- define "gimbal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name alone when it already says gimbal, else release-gimbal. */}}
{{- define "gimbal.fullname" -}}
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

{{- define "gimbal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gimbal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gimbal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gimbal.labels" -}}
helm.sh/chart: {{ include "gimbal.chart" . }}
{{ include "gimbal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: node-agent
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gimbal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gimbal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gimbal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The pod's probes and Service use `port`, so [agent] listen must bind every address of the
pod on that port; a config that says otherwise would leave the pod never ready.
*/}}
{{- define "gimbal.checkListen" -}}
{{- $line := regexFind "(?m)^[ \t]*listen[ \t]*=[ \t]*\"[^\"]*\"" .Values.config }}
{{- $want := list (printf "0.0.0.0:%v" .Values.port) (printf "[::]:%v" .Values.port) }}
{{- $got := regexReplaceAll "^[^\"]*\"([^\"]*)\"$" (trim $line) "${1}" }}
{{- if not (has $got $want) }}
{{- fail (printf "config: [agent] listen must be \"0.0.0.0:%v\" (or \"[::]:%v\") so probes and Prometheus reach the pod on `port`; found %q" .Values.port .Values.port (default "nothing" $line)) }}
{{- end }}
{{- end }}

{{/*
Non-empty when the agent writes to the Kubernetes API (.Values.cluster).
*/}}
{{- define "gimbal.writesToKubernetes" -}}
{{- if or .Values.cluster.nodeCondition .Values.cluster.taint .Values.cluster.readinessGate .Values.cluster.evictions }}true{{ end }}
{{- end }}

{{/*
`config`, with `web_config` set first in its [agent] table when webConfig is enabled.
*/}}
{{- define "gimbal.config" -}}
{{- $config := .Values.config }}
{{- if .Values.webConfig.enabled }}
{{- if regexMatch "(?m)^[ \t]*web_config[ \t]*=" $config }}
{{- fail "config: leave web_config out of [agent] when webConfig.enabled is true; the chart sets it to the mounted Secret" }}
{{- end }}
{{- if not (regexMatch "(?m)^[ \t]*\\[agent\\][ \t]*$" $config) }}
{{- fail "config: webConfig.enabled needs an [agent] table in config to put web_config in" }}
{{- end }}
{{- $line := printf "[agent]\nweb_config = %s" (printf "%s/web.yml" (trimSuffix "/" .Values.webConfig.mountPath) | quote) }}
{{- $config = regexReplaceAll "(?m)^[ \t]*\\[agent\\][ \t]*$" $config $line }}
{{- end }}
{{- $config }}
{{- end }}

{{/*
A kubelet probe (the `livenessProbe` or `readinessProbe` value) as the web config allows
it: unchanged without one; over https, or a TCP connect, with one (values: webConfig.probes).
*/}}
{{- define "gimbal.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if .web.enabled }}
{{- if eq .web.probes "https" }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- else if eq .web.probes "tcpSocket" }}
{{- $_ := set $probe "tcpSocket" (dict "port" $probe.httpGet.port) }}
{{- $_ := unset $probe "httpGet" }}
{{- else }}
{{- fail (printf "webConfig.probes: %q is neither \"tcpSocket\" nor \"https\"" .web.probes) }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}
