//! The operator dashboard the admin listener serves at `/`: incidents (the alert that notifies,
//! with the narrower alerts it covers folded under it), a slices x time strip of the last hour,
//! a heat map of services by the top ASNs or countries (ranked and filtered by the collector),
//! the time series of a chosen slice, the stored reports, and recent alerts.
//!
//! ```text
//!  GET /                    index.html ── <link> style.css, <script src> app.js (no inline code)
//!  GET /dashboard/app.js    polls every 5 s:  GET /v1/alerts
//!                                             GET /v1/heatmap?dim=asn|country&top=N&sort=..[&filter=..]
//!                                             GET /v1/strip
//!                                             GET /v1/series?service=..[&dim=..&key=..]  (chosen slice)
//!                           on demand:        GET /v1/reports?service=..&type=..&asn=..&country=..&since=..
//!                                                            [&cursor=..]  ("Older reports")
//! ```
//!
//! The page is plain HTML, CSS and one vanilla JavaScript file, embedded in the binary: no
//! framework, no build step, no external origin, under 64 KB in all. It works under
//! [`CONTENT_SECURITY_POLICY`], renders API text only as text (never as markup), and reads
//! without JavaScript as far as a title and a note pointing at the JSON endpoints. This module
//! only serves the files; the JSON API is [`crate::alerting`].
//!
//! ```
//! use vantage_collector::dashboard;
//!
//! let page = dashboard::asset("/").expect("the page is served at /");
//! assert_eq!(page.content_type, "text/html; charset=utf-8");
//! assert!(dashboard::asset("/dashboard/app.js").is_some());
//! assert!(dashboard::asset("/v1/alerts").is_none());
//! ```

/// One embedded file of the dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asset {
    /// The `Content-Type` to send with it.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The Content-Security-Policy the page works under, sent with every asset: everything from
/// this origin only, no inline script or style, no plugins, no framing, no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every served path, its type and its bytes.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    ("/", HTML, include_bytes!("index.html")),
    ("/index.html", HTML, include_bytes!("index.html")),
    ("/dashboard/app.js", JS, include_bytes!("app.js")),
    ("/dashboard/style.css", CSS, include_bytes!("style.css")),
    ("/dashboard/favicon.svg", SVG, include_bytes!("favicon.svg")),
];

/// The asset for a request path: `/` and `/index.html` give the page, `/dashboard/app.js`,
/// `/dashboard/style.css` and `/dashboard/favicon.svg` its parts; `None` for anything else
/// (the path is matched exactly, without a query).
pub fn asset(path: &str) -> Option<Asset> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|&(_, content_type, body)| Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> &'static str {
        std::str::from_utf8(asset(path).unwrap().body).unwrap()
    }

    /// Values of `attr="..."` in `html`.
    fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
        let needle = format!(" {attr}=\"");
        html.match_indices(&needle)
            .map(|(i, _)| {
                let rest = &html[i + needle.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect()
    }

    #[test]
    fn serves_the_page_and_its_parts_and_nothing_else() {
        assert_eq!(asset("/"), asset("/index.html"));
        for (path, ty) in [
            ("/", HTML),
            ("/dashboard/app.js", JS),
            ("/dashboard/style.css", CSS),
            ("/dashboard/favicon.svg", SVG),
        ] {
            let a = asset(path).unwrap();
            assert_eq!(a.content_type, ty, "{path}");
            assert!(!a.body.is_empty(), "{path}");
        }
        for path in ["", "/index.htm", "/dashboard/", "/dashboard/x.js", "/app.js", "/v1/alerts"] {
            assert_eq!(asset(path), None, "{path}");
        }
        assert_eq!(asset("/dashboard/../index.html"), None);
        assert_eq!(asset("/?x=1"), None);
    }

    #[test]
    fn the_page_links_only_served_same_origin_assets_and_has_no_inline_code() {
        let html = text("/");
        let mut linked = attr_values(html, "src");
        linked
            .extend(attr_values(html, "href").into_iter().filter(|h| h.starts_with("/dashboard/")));
        assert_eq!(linked.len(), 3, "{linked:?}");
        for path in linked {
            assert!(asset(path).is_some(), "{path} is linked but not served");
        }
        // Every other link points at this collector's own API.
        for href in attr_values(html, "href").into_iter().filter(|h| !h.starts_with("/dashboard/"))
        {
            assert!(["/v1/", "/metrics"].iter().any(|p| href.starts_with(p)), "{href}");
        }
        // No inline script, style or event handler: the CSP would block them.
        assert_eq!(html.matches("<script").count(), html.matches("<script src=").count());
        for forbidden in ["<style", " style=", " onclick=", " onload=", "javascript:"] {
            assert!(!html.contains(forbidden), "{forbidden}");
        }
        assert!(html.contains("<title>Vantage collector</title>"));
        assert!(html.contains("<noscript>"), "a note for readers without JavaScript");
    }

    #[test]
    fn no_asset_reaches_another_origin_and_api_text_is_never_markup() {
        for (path, _, body) in ASSETS {
            let body = std::str::from_utf8(body).unwrap();
            // The SVG namespace URI is a name, not a fetch.
            let body = body.replace("http://www.w3.org/2000/svg", "");
            for origin in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!body.contains(origin), "{path} contains {origin}");
            }
        }
        let js = text("/dashboard/app.js");
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
        for endpoint in [
            "'/v1/alerts'",
            "'/v1/heatmap?dim='",
            "'/v1/series?'",
            "'/v1/strip'",
            "'/v1/reports?'",
            "'/v1/agent_drops'",
        ] {
            assert!(js.contains(endpoint), "app.js does not call {endpoint}");
        }
    }

    #[test]
    fn the_page_is_small_and_the_policy_is_strict() {
        let total: usize = ASSETS.iter().skip(1).map(|(_, _, b)| b.len()).sum();
        assert!(total < 64 * 1024, "{total} bytes");
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self';"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(!CONTENT_SECURITY_POLICY.contains("http"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        // The header value must be one line of visible ASCII.
        assert!(CONTENT_SECURITY_POLICY.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
}
