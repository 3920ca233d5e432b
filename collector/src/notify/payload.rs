//! Payload builders: pure functions of an alert (and the time of sending), one per receiver
//! kind, plus the small UTC date helpers they need.

use serde_json::{Value, json};

use crate::detect::{Alert, AlertEvent, AlertKind, AlertState, SliceDim, SliceKey};

/// A short human label for a slice: `shop`, `shop / AS64500`, `shop / DE`, `shop / tcp`.
pub fn slice_label(slice: &SliceKey) -> String {
    match &slice.dim {
        SliceDim::Service => slice.service.clone(),
        SliceDim::Group(g) => format!("{} / {}", slice.service, g.as_str()),
        SliceDim::Asn(asn) => format!("{} / AS{asn}", slice.service),
        SliceDim::Country(c) => format!("{} / {c}", slice.service),
    }
}

fn event_name(event: &AlertEvent) -> &'static str {
    match event {
        AlertEvent::Fired(_) => "fired",
        AlertEvent::Resolved(_) => "resolved",
        AlertEvent::Retrospective(_) => "retrospective",
        AlertEvent::Regrouped(_) => "regrouped",
    }
}

/// The dashboard link for an alert: `{external_url}/?alert={id}`.
fn dashboard_url(alert: &Alert, external_url: Option<&str>) -> Option<String> {
    external_url.map(|base| format!("{}/?alert={}", base.trim_end_matches('/'), alert.id))
}

/// The generic JSON webhook body:
/// `{"version":"1","event":"fired|resolved|retrospective","alert":{..Alert.., "label":..},
/// "dashboard_url":..|null}`.
pub fn webhook_payload(event: &AlertEvent, external_url: Option<&str>) -> Value {
    let alert = event.alert();
    let mut body = serde_json::to_value(alert).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut body {
        map.insert("label".into(), Value::String(slice_label(&alert.slice)));
    }
    json!({
        "version": "1",
        "event": event_name(event),
        "alert": body,
        "dashboard_url": dashboard_url(alert, external_url),
    })
}

/// What the alert is, in words.
fn title(event: &AlertEvent) -> &'static str {
    let alert = event.alert();
    match (event, alert.kind) {
        (AlertEvent::Retrospective(_), _) | (_, AlertKind::Retrospective) => {
            "Past client-side outage (found in late reports)"
        }
        // A wider slice took over an incident already paged for: an update of that page.
        (AlertEvent::Fired(_), AlertKind::Failures) if alert.supersedes.is_some() => {
            "Client-side outage widened"
        }
        (AlertEvent::Fired(_), AlertKind::Failures) => "Client-side outage",
        (AlertEvent::Fired(_), AlertKind::Silence) => "Clients went silent",
        (AlertEvent::Resolved(_), AlertKind::Failures) => "Resolved: client-side outage",
        (AlertEvent::Resolved(_), AlertKind::Silence) => "Resolved: clients went silent",
        // Never delivered (a regrouped alert is inhibited); a title all the same.
        (AlertEvent::Regrouped(_), _) => "Grouped under a wider alert",
    }
}

/// Slack mrkdwn escaping of text we do not control.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// `tcp 12, dns 3` (largest first).
fn breakdown_text(alert: &Alert) -> String {
    let mut parts: Vec<(&String, &u64)> = alert.breakdown.iter().collect();
    parts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    parts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

fn top_asns_text(alert: &Alert) -> String {
    alert.top_asns.iter().map(|(asn, n)| format!("AS{asn} ({n})")).collect::<Vec<_>>().join(", ")
}

fn top_countries_text(alert: &Alert) -> String {
    alert.top_countries.iter().map(|(c, n)| format!("{c} ({n})")).collect::<Vec<_>>().join(", ")
}

/// `observed 40.0% vs baseline 1.0% (40.0x)`, or `None` for alerts without a ratio test.
fn ratio_text(alert: &Alert) -> Option<String> {
    if alert.kind == AlertKind::Silence || alert.observed_ratio <= 0.0 {
        return None;
    }
    let mut text =
        format!("{} vs baseline {}", percent(alert.observed_ratio), percent(alert.baseline_ratio));
    if alert.baseline_ratio > 0.0 {
        text.push_str(&format!(" ({:.1}x)", alert.observed_ratio / alert.baseline_ratio));
    }
    Some(text)
}

/// One line on who is affected.
fn clients_text(alert: &Alert) -> String {
    match alert.kind {
        AlertKind::Silence => format!(
            "{} clients on {} networks still reporting; about {} expected",
            alert.clients, alert.networks, alert.active_clients
        ),
        _ => format!(
            "{} failing clients on {} networks ({} active clients)",
            alert.clients, alert.networks, alert.active_clients
        ),
    }
}

/// A Slack-compatible incoming-webhook body: `{"text": .., "blocks": [..]}`. `text` is the
/// readable fallback (and what Mattermost-style receivers show); the blocks carry the slice,
/// kind, start and end (UTC), clients, networks, ratio against the baseline, the breakdown by
/// failure group, the top ASNs and countries, and a dashboard link.
pub fn slack_payload(event: &AlertEvent, external_url: Option<&str>) -> Value {
    let alert = event.alert();
    let label = esc(&slice_label(&alert.slice));
    let icon = match event {
        AlertEvent::Fired(_) => ":rotating_light:",
        AlertEvent::Resolved(_) => ":white_check_mark:",
        AlertEvent::Retrospective(_) => ":mag:",
        AlertEvent::Regrouped(_) => ":link:",
    };
    let headline = format!("{icon} *{}*: {label}", title(event));
    let mut lines = vec![
        format!("*Slice:* {label} (`{}`)", esc(&alert.slice.to_string())),
        format!("*Kind:* {}", alert.kind.as_str()),
        format!("*Started:* {}", utc_text(alert.start_ms)),
        match alert.end_ms {
            Some(end) => format!("*Ended:* {}", utc_text(end)),
            None => "*Ended:* still going on".to_owned(),
        },
        format!("*Clients:* {}", clients_text(alert)),
    ];
    if let Some(ratio) = ratio_text(alert) {
        lines.push(format!("*Failure ratio:* {ratio}"));
    }
    if !alert.breakdown.is_empty() {
        lines.push(format!("*Breakdown:* {}", esc(&breakdown_text(alert))));
    }
    if !alert.top_asns.is_empty() {
        lines.push(format!("*Top ASNs:* {}", top_asns_text(alert)));
    }
    if !alert.top_countries.is_empty() {
        lines.push(format!("*Top countries:* {}", esc(&top_countries_text(alert))));
    }
    let link = dashboard_url(alert, external_url);
    let mut text = format!("{headline}\n{}", lines.join("\n"));
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": headline}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}}),
    ];
    if let Some(url) = &link {
        text.push_str(&format!("\n<{url}|Open the dashboard>"));
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("<{url}|Open the dashboard>")}],
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("alert `{}`", alert.id)}],
    }));
    json!({"text": text, "blocks": blocks})
}

/// Alertmanager's `alertname` for an alert kind.
fn alertname(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::Failures => "VantageClientOutage",
        AlertKind::Silence => "VantageClientSilence",
        AlertKind::Retrospective => "VantageClientRetrospective",
    }
}

/// The Alertmanager v2 `POST /api/v2/alerts` body for `alerts`, each with the time it is sent.
///
/// Labels: `alertname` (`VantageClientOutage`, `VantageClientSilence`,
/// `VantageClientRetrospective`), `service`, `slice` (`shop/asn=64500`), `dim` and the cut's
/// value (`asn`, `country` or `group`), `vantage_id` (the alert id: one incident, one
/// Alertmanager alert) and `severity` (`page`; `info` for retrospectives). A firing alert gets
/// `endsAt = now + 4 × resend_ms` (as Prometheus does, so Alertmanager resolves it on its own
/// only if the re-sends stop); a resolved one gets its end.
pub fn alertmanager_payload(
    alerts: &[(&Alert, u64)],
    resend_ms: u64,
    external_url: Option<&str>,
) -> Value {
    let items: Vec<Value> = alerts
        .iter()
        .map(|(alert, now_ms)| {
            let mut labels = serde_json::Map::new();
            labels.insert("alertname".into(), alertname(alert.kind).into());
            labels.insert("service".into(), alert.slice.service.clone().into());
            labels.insert("slice".into(), alert.slice.to_string().into());
            let (dim, value) = match &alert.slice.dim {
                SliceDim::Service => ("service", None),
                SliceDim::Group(g) => ("group", Some(g.as_str().to_owned())),
                SliceDim::Asn(a) => ("asn", Some(a.to_string())),
                SliceDim::Country(c) => ("country", Some(c.clone())),
            };
            labels.insert("dim".into(), dim.into());
            if let Some(v) = value {
                labels.insert(dim.into(), v.into());
            }
            labels.insert("vantage_id".into(), alert.id.to_string().into());
            let severity = if alert.kind == AlertKind::Retrospective { "info" } else { "page" };
            labels.insert("severity".into(), severity.into());

            let label = slice_label(&alert.slice);
            let mut description = clients_text(alert);
            if let Some(ratio) = ratio_text(alert) {
                description.push_str(&format!("; failure ratio {ratio}"));
            }
            if !alert.breakdown.is_empty() {
                description.push_str(&format!("; by failure group: {}", breakdown_text(alert)));
            }
            if !alert.top_asns.is_empty() {
                description.push_str(&format!("; top ASNs: {}", top_asns_text(alert)));
            }
            if !alert.top_countries.is_empty() {
                description.push_str(&format!("; top countries: {}", top_countries_text(alert)));
            }
            let summary = match alert.kind {
                AlertKind::Failures => format!("Client-side outage: {label}"),
                AlertKind::Silence => format!("Clients went silent: {label}"),
                AlertKind::Retrospective => format!("Past client-side outage: {label}"),
            };
            let mut annotations = serde_json::Map::new();
            annotations.insert("summary".into(), summary.into());
            annotations.insert("description".into(), description.into());
            if let Some(url) = dashboard_url(alert, external_url) {
                annotations.insert("dashboard".into(), url.into());
            }

            let ended =
                alert.state == AlertState::Resolved || alert.kind == AlertKind::Retrospective;
            let ends_ms = if ended {
                alert.end_ms.unwrap_or(alert.start_ms)
            } else {
                now_ms.saturating_add(resend_ms.saturating_mul(4))
            }
            // Alertmanager refuses an alert that ends before it starts.
            .max(alert.start_ms);
            let mut item = serde_json::Map::new();
            item.insert("labels".into(), Value::Object(labels));
            item.insert("annotations".into(), Value::Object(annotations));
            item.insert("startsAt".into(), rfc3339(alert.start_ms).into());
            item.insert("endsAt".into(), rfc3339(ends_ms).into());
            if let Some(url) = external_url {
                item.insert("generatorURL".into(), url.into());
            }
            Value::Object(item)
        })
        .collect();
    Value::Array(items)
}

/// (year, month, day) of a day number counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day number from 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (y, m) =
        if month <= 2 { (year - 1, i64::from(month) + 9) } else { (year, i64::from(month) - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn split(ms: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    (y, mo, d, rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// `2024-01-02T03:04:05.678Z`.
pub(crate) fn rfc3339(ms: u64) -> String {
    let (y, mo, d, h, mi, s, milli) = split(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// `2024-01-02 03:04:05 UTC`.
fn utc_text(ms: u64) -> String {
    let (y, mo, d, h, mi, s, _) = split(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::detect::{AlertId, FailureGroup};

    pub(crate) fn alert(dim: SliceDim) -> Alert {
        Alert {
            id: AlertId(0x00ab_cdef_0123_4567),
            slice: SliceKey::new("shop", dim),
            kind: AlertKind::Failures,
            state: AlertState::Firing,
            start_ms: 1_700_000_000_000,
            end_ms: None,
            raised_at_ms: 1_700_000_060_000,
            inhibited_by: None,
            score: 31.2,
            observed_ratio: 0.4,
            baseline_ratio: 0.01,
            clients: 40,
            networks: 30,
            active_clients: 80,
            breakdown: BTreeMap::from([("tcp".to_owned(), 12), ("dns".to_owned(), 3)]),
            top_asns: vec![(64500, 20)],
            top_countries: vec![("DE".to_owned(), 20)],
            supersedes: None,
        }
    }

    #[test]
    fn labels_for_every_cut() {
        assert_eq!(slice_label(&SliceKey::service("shop")), "shop");
        assert_eq!(slice_label(&SliceKey::new("shop", SliceDim::Asn(64500))), "shop / AS64500");
        assert_eq!(
            slice_label(&SliceKey::new("shop", SliceDim::Country("DE".into()))),
            "shop / DE"
        );
        assert_eq!(
            slice_label(&SliceKey::new("shop", SliceDim::Group(FailureGroup::Tcp))),
            "shop / tcp"
        );
    }

    #[test]
    fn dates_are_utc_and_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_text(4_102_444_799_000), "2099-12-31 23:59:59 UTC");
        for days in [-1, 0, 59, 60, 365, 10_957, 11_016, 19_675, 47_482] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn webhook_payload_carries_the_alert_and_its_label() {
        let a = alert(SliceDim::Asn(64500));
        let v = webhook_payload(&AlertEvent::Fired(a.clone()), Some("https://dash.example/"));
        assert_eq!(v["version"], "1");
        assert_eq!(v["event"], "fired");
        assert_eq!(v["alert"]["id"], "00abcdef01234567");
        assert_eq!(v["alert"]["label"], "shop / AS64500");
        assert_eq!(
            v["alert"]["slice"],
            json!({"service":"shop","dim":{"kind":"asn","value":64500}})
        );
        assert_eq!(v["alert"]["state"], "firing");
        assert_eq!(v["alert"]["top_asns"], json!([[64500, 20]]));
        assert_eq!(v["dashboard_url"], "https://dash.example/?alert=00abcdef01234567");
        // Everything else of the alert is there, as the alert serialises.
        let mut plain = serde_json::to_value(&a).unwrap();
        plain["label"] = "shop / AS64500".into();
        assert_eq!(v["alert"], plain);

        let mut r = a.clone();
        r.state = AlertState::Resolved;
        r.end_ms = Some(a.start_ms + 600_000);
        let v = webhook_payload(&AlertEvent::Resolved(r), None);
        assert_eq!(v["event"], "resolved");
        assert_eq!(v["alert"]["end_ms"], a.start_ms + 600_000);
        assert!(v["dashboard_url"].is_null());
        let v = webhook_payload(&AlertEvent::Retrospective(a), None);
        assert_eq!(v["event"], "retrospective");
    }

    #[test]
    fn slack_payload_is_readable() {
        let a = alert(SliceDim::Asn(64500));
        let v = slack_payload(&AlertEvent::Fired(a.clone()), Some("https://dash.example"));
        let text = v["text"].as_str().unwrap();
        for want in [
            "Client-side outage",
            "shop / AS64500",
            "`shop/asn=64500`",
            "*Kind:* failures",
            "2023-11-14 22:13:20 UTC",
            "still going on",
            "40 failing clients on 30 networks (80 active clients)",
            "40.0% vs baseline 1.0% (40.0x)",
            "tcp 12, dns 3",
            "AS64500 (20)",
            "DE (20)",
            "<https://dash.example/?alert=00abcdef01234567|Open the dashboard>",
        ] {
            assert!(text.contains(want), "{want:?} not in {text}");
        }
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "section");
        assert!(blocks[0]["text"]["text"].as_str().unwrap().contains("shop / AS64500"));
        assert!(blocks[1]["text"]["text"].as_str().unwrap().contains("*Top ASNs:*"));
        assert!(blocks.iter().all(|b| b["type"] == "section" || b["type"] == "context"));

        let mut r = a;
        r.state = AlertState::Resolved;
        r.end_ms = Some(r.start_ms + 90_000);
        r.slice = SliceKey::new("a<b>&c", SliceDim::Service);
        let v = slack_payload(&AlertEvent::Resolved(r), None);
        let text = v["text"].as_str().unwrap();
        assert!(
            text.contains("Resolved: client-side outage")
                && text.contains("2023-11-14 22:14:50 UTC")
        );
        assert!(
            text.contains("a&lt;b&gt;&amp;c") && !text.contains("Open the dashboard"),
            "{text}"
        );
    }

    #[test]
    fn alertmanager_payload_labels_and_times() {
        let now = 1_700_000_100_000;
        let a = alert(SliceDim::Asn(64500));
        let v = alertmanager_payload(&[(&a, now)], 60_000, Some("https://dash.example"));
        assert_eq!(
            v,
            json!([{
                "labels": {
                    "alertname": "VantageClientOutage",
                    "service": "shop",
                    "slice": "shop/asn=64500",
                    "dim": "asn",
                    "asn": "64500",
                    "vantage_id": "00abcdef01234567",
                    "severity": "page",
                },
                "annotations": {
                    "summary": "Client-side outage: shop / AS64500",
                    "description": "40 failing clients on 30 networks (80 active clients); \
                        failure ratio 40.0% vs baseline 1.0% (40.0x); by failure group: tcp 12, \
                        dns 3; top ASNs: AS64500 (20); top countries: DE (20)",
                    "dashboard": "https://dash.example/?alert=00abcdef01234567",
                },
                "startsAt": "2023-11-14T22:13:20.000Z",
                "endsAt": rfc3339(now + 240_000),
                "generatorURL": "https://dash.example",
            }])
        );

        let mut silent = alert(SliceDim::Country("DE".into()));
        silent.kind = AlertKind::Silence;
        silent.state = AlertState::Resolved;
        silent.end_ms = Some(silent.start_ms + 5_000);
        let group = alert(SliceDim::Group(FailureGroup::Tcp));
        let whole = alert(SliceDim::Service);
        let v = alertmanager_payload(&[(&silent, now), (&group, now), (&whole, now)], 1000, None);
        assert_eq!(v[0]["labels"]["alertname"], "VantageClientSilence");
        assert_eq!(v[0]["labels"]["country"], "DE");
        assert_eq!(v[0]["labels"]["dim"], "country");
        assert_eq!(v[0]["endsAt"], "2023-11-14T22:13:25.000Z");
        assert!(
            v[0].get("generatorURL").is_none() && v[0]["annotations"].get("dashboard").is_none()
        );
        assert_eq!(v[1]["labels"]["group"], "tcp");
        assert_eq!(v[1]["endsAt"], rfc3339(now + 4000));
        assert_eq!(v[2]["labels"]["dim"], "service");
        assert_eq!(v[2]["labels"].as_object().unwrap().len(), 6, "no cut value for a service");

        // A resolved alert never ends before it starts (Alertmanager would refuse it).
        let mut odd = alert(SliceDim::Service);
        odd.kind = AlertKind::Retrospective;
        odd.end_ms = None;
        let v = alertmanager_payload(&[(&odd, now)], 1000, None);
        assert_eq!(v[0]["endsAt"], v[0]["startsAt"]);
        assert_eq!(v[0]["labels"]["severity"], "info");
    }
}
