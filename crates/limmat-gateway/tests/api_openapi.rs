//! `GET /openapi.json` (`gateway-api.md` §1.3, checklist 48): an OpenAPI 3.1 document,
//! generated from the handlers, that parses back into utoipa's model and lists every [R] route
//! of §2 with its methods. (The §3 routes are checked where they are built.)

mod api_support;

use api_support::Gateway;
use limmat_gateway::api::ApiSettings;
use limmat_gateway::backend::sim::{SimBackend, SimConfig};
use std::sync::Arc;

/// §2's [R] routes, as (method, path template).
const REQUIRED: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/gap/nodes"),
    ("get", "/gap/nodes/{node}"),
    ("put", "/gap/nodes/{node}"),
    ("post", "/gap/nodes/{node}/connection"),
    ("delete", "/gap/nodes/{node}/connection"),
    ("get", "/gatt/nodes"),
    ("get", "/gatt/nodes/{node}"),
    ("get", "/gatt/nodes/{node}/services"),
    ("get", "/gatt/nodes/{node}/services/{service}"),
    (
        "get",
        "/gatt/nodes/{node}/services/{service}/characteristics",
    ),
    ("get", "/gatt/nodes/{node}/characteristics"),
    ("get", "/gatt/nodes/{node}/characteristics/{characteristic}"),
    ("put", "/gatt/nodes/{node}/characteristics/{characteristic}"),
    (
        "get",
        "/gatt/nodes/{node}/characteristics/{characteristic}/value",
    ),
    (
        "put",
        "/gatt/nodes/{node}/characteristics/{characteristic}/value/{value}",
    ),
    (
        "get",
        "/gatt/nodes/{node}/characteristics/{characteristic}/descriptors",
    ),
    ("get", "/gatt/nodes/{node}/descriptors/{descriptor}"),
    ("get", "/gatt/nodes/{node}/descriptors/{descriptor}/value"),
    (
        "put",
        "/gatt/nodes/{node}/descriptors/{descriptor}/value/{value}",
    ),
];

#[tokio::test(start_paused = true)]
async fn the_openapi_document_is_3_1_and_lists_every_required_route() {
    let sim = SimBackend::new(&SimConfig::default()).unwrap();
    let gw = Gateway::start(Arc::new(sim), ApiSettings::default()).await;
    let reply = gw.get("/openapi.json").await;
    assert_eq!(reply.status, 200);
    let doc = reply.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());
    assert!(doc["info"]["version"].is_string());
    if std::env::var("DUMP_OPENAPI").is_ok() {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
    }
    // It parses back into utoipa's model of OpenAPI 3.1.
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(doc.clone()).expect("a well-formed OpenAPI document");
    assert!(!parsed.paths.paths.is_empty());
    for (method, path) in REQUIRED {
        let item = &doc["paths"][path];
        assert!(item.is_object(), "{path} is missing");
        let op = &item[method];
        assert!(op.is_object(), "{method} {path} is missing");
        assert!(
            op["responses"].is_object(),
            "{method} {path} has no responses"
        );
        // Every path parameter of the template is declared.
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(['{', '}']);
            let declared = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
            assert!(declared, "{method} {path} does not declare {name}");
        }
    }
}

/// Every operation that can answer with an event stream names `text/event-stream` for its `200`,
/// beside JSON where the same path also answers JSON: a client generated from the document, or
/// schemathesis, must not meet a content type the document leaves out. (`/beacon/events`, built
/// with the Beacon API, is checked end to end by schemathesis in `limmat`'s tests.)
#[tokio::test(start_paused = true)]
async fn every_event_stream_is_a_documented_content_type() {
    let sim = SimBackend::new(&SimConfig::default()).unwrap();
    let gw = Gateway::start(Arc::new(sim), ApiSettings::default()).await;
    let doc = gw.get("/openapi.json").await.json();
    let streams: &[(&str, bool)] = &[
        ("/gap/nodes", true),
        ("/gap/connection-events", false),
        (
            "/gatt/nodes/{node}/characteristics/{characteristic}/value",
            true,
        ),
    ];
    for (path, also_json) in streams {
        let content = &doc["paths"][path]["get"]["responses"]["200"]["content"];
        assert!(
            content["text/event-stream"].is_object(),
            "GET {path}: {content}"
        );
        assert_eq!(
            content["application/json"].is_object(),
            *also_json,
            "GET {path}: {content}"
        );
    }
}
