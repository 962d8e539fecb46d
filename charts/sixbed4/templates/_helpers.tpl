{{/* Names and labels shared by the templates. */}}

{{- define "sixbed4.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release> when it contains the chart name, else <release>-<chart>; at most 48 characters (suffixes follow). */}}
{{- define "sixbed4.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sixbed4.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sixbed4.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sixbed4.operatorSelector" -}}
app.kubernetes.io/name: {{ include "sixbed4.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "sixbed4.agentSelector" -}}
app.kubernetes.io/name: {{ include "sixbed4.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "sixbed4.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "sixbed4.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "sixbed4.fullname" .)) .Values.serviceAccounts.operator.name -}}
{{- end -}}

{{- define "sixbed4.agentServiceAccount" -}}
{{- default (printf "%s-agent" (include "sixbed4.fullname" .)) .Values.serviceAccounts.agent.name -}}
{{- end -}}

{{- define "sixbed4.leaseName" -}}
{{- printf "%s-operator" (include "sixbed4.fullname" .) -}}
{{- end -}}

{{/*
The sixbed4-cni arguments of the install container and the agent: the node's
CNI directories as mounted, and the plugin's settings.
*/}}
{{- define "sixbed4.cniArgs" -}}
- --cni-bin-dir
- /host/cni/bin
- --cni-conf-dir
- /host/cni/net.d
- --cni-socket
- {{ .Values.cni.socket | quote }}
- --cni-interface
- {{ .Values.cni.interface | quote }}
- --cni-pod-annotation
- {{ .Values.cni.podAnnotation | quote }}
{{- end }}
