{{/*
Generated from the typed objects of `ferry install` (crates/cli/src/chart.rs).
Do not edit: regenerate with `FERRY_UPDATE_GOLDEN=1 cargo nextest run -p ferry --test chart`.
ferry.webhookTLS: (list $ "caPEM" | "crtPEM" | "keyPEM") → that PEM. When webhook.crtPEM
is empty, a CA and a serving certificate for the injector Service are generated (ECDSA
P-256, 365 days, the names `ferry install` uses), once per render.
*/}}
{{- define "ferry.webhookTLS" -}}
{{- $root := index . 0 -}}
{{- if not (hasKey $root.Values "ferryWebhookTLS") -}}
{{- $w := $root.Values.webhook -}}
{{- $tls := dict "caPEM" $w.caPEM "crtPEM" $w.crtPEM "keyPEM" $w.keyPEM -}}
{{- if $w.crtPEM -}}
{{- $_ := required "webhook.keyPEM is required when webhook.crtPEM is given" $w.keyPEM -}}
{{- $_ := required "webhook.caPEM is required when webhook.crtPEM is given" $w.caPEM -}}
{{- else -}}
{{- $svc := printf "ferry-proxy-injector.%s.svc" $root.Values.namespace -}}
{{- $names := list $svc (printf "%s.%s" $svc $root.Values.trustDomain) -}}
{{- $ca := genCAWithKey "ferry-proxy-injector-ca" 365 (genPrivateKey "ecdsa") -}}
{{- $cert := genSignedCertWithKey $svc nil $names 365 $ca (genPrivateKey "ecdsa") -}}
{{- $tls = dict "caPEM" $ca.Cert "crtPEM" $cert.Cert "keyPEM" $cert.Key -}}
{{- end -}}
{{- $_ := set $root.Values "ferryWebhookTLS" $tls -}}
{{- end -}}
{{- index $root.Values.ferryWebhookTLS (index . 1) -}}
{{- end -}}
