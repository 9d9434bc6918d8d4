//! Docker cannot run here, so the deployment files are checked against the binaries instead:
//! every command line and variable they give must be one the binary accepts.

use std::ffi::OsStr;

use clap::CommandFactory;
use serde_yaml_ng::Value;

const OUR_IMAGE: &str = "reductstore-rs:latest";

/// Standard OpenTelemetry variables, read by the OpenTelemetry SDK rather than by our flags.
const OPENTELEMETRY_VARIABLES: [&str; 4] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_BSP_SCHEDULE_DELAY",
];

fn program(name: &str) -> Option<clap::Command> {
    match name {
        "gateway" => Some(gateway::Config::command()),
        "storage-node" => Some(storage_node::config::NodeConfig::command()),
        "query-service" => Some(query_service::config::ServiceConfig::command()),
        _ => None,
    }
}

fn repository_file(name: &str) -> String {
    let path = format!("{}/../{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The flag a variable stands for in `command`, if the program reads it.
fn flag_for(command: &clap::Command, variable: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|arg| arg.get_env() == Some(OsStr::new(variable)))
        .and_then(|arg| arg.get_long())
        .map(|long| format!("--{long}"))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn every_compose_service_of_ours_runs_a_command_line_its_binary_accepts() {
    let mut compose: Value = serde_yaml_ng::from_str(&repository_file("docker-compose.yml")).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().expect("services");
    let mut checked = Vec::new();
    for (name, service) in services {
        let name = text(name);
        if service.get("image").map(text).as_deref() != Some(OUR_IMAGE) {
            continue;
        }
        let command: Vec<String> = service["command"]
            .as_sequence()
            .expect("command")
            .iter()
            .map(text)
            .collect();
        let mut program =
            program(&command[0]).unwrap_or_else(|| panic!("{name}: unknown program {}", command[0]));
        let mut args = command.clone();
        if let Some(environment) = service.get("environment").and_then(Value::as_mapping) {
            for (variable, value) in environment {
                let variable = text(variable);
                if OPENTELEMETRY_VARIABLES.contains(&variable.as_str()) {
                    continue;
                }
                let flag = flag_for(&program, &variable)
                    .unwrap_or_else(|| panic!("{name}: {} does not read {variable}", command[0]));
                args.push(flag);
                args.push(text(value));
            }
        }
        if let Err(e) = program.try_get_matches_from_mut(&args) {
            panic!("{name}: {args:?} is refused: {e}");
        }
        checked.push(name);
    }
    checked.sort();
    assert_eq!(
        checked,
        ["gateway-1", "gateway-2", "gateway-3", "query", "storage"]
    );
}

#[test]
fn every_variable_the_image_sets_is_read_by_one_of_the_binaries() {
    let dockerfile = repository_file("Dockerfile");
    let variables: Vec<&str> = dockerfile
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("RS_"))
        .collect();
    assert!(variables.len() >= 3, "{variables:?}");
    let programs: Vec<clap::Command> = ["gateway", "storage-node", "query-service"]
        .iter()
        .filter_map(|name| program(name))
        .collect();
    for variable in variables {
        assert!(
            programs.iter().any(|p| flag_for(p, variable).is_some()),
            "no binary reads {variable}"
        );
    }
    for binary in ["gateway", "storage-node", "query-service"] {
        assert!(
            dockerfile.contains(&format!("/target/release/{binary}")),
            "the image lacks {binary}"
        );
    }
}

#[test]
fn nginx_streams_bodies_to_all_three_gateways() {
    let nginx = repository_file("deploy/nginx.conf");
    for line in [
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "client_max_body_size 0;",
    ] {
        assert!(nginx.contains(line), "nginx.conf lacks {line}");
    }
    for gateway in ["gateway-1:8383", "gateway-2:8383", "gateway-3:8383"] {
        assert!(nginx.contains(gateway), "nginx.conf lacks {gateway}");
    }
}

#[test]
fn the_collector_forwards_traces_to_jaeger_and_metrics_to_prometheus() {
    let collector: Value = serde_yaml_ng::from_str(&repository_file("deploy/otel-collector.yaml")).unwrap();
    let pipelines = &collector["service"]["pipelines"];
    let exporters = |pipeline: &str| -> Vec<String> {
        pipelines[pipeline]["exporters"]
            .as_sequence()
            .expect("exporters")
            .iter()
            .map(text)
            .collect()
    };
    assert_eq!(exporters("traces"), ["otlp/jaeger"]);
    assert_eq!(exporters("metrics"), ["prometheus"]);
    assert_eq!(
        text(&collector["exporters"]["otlp/jaeger"]["endpoint"]),
        "jaeger:4317"
    );
    let port = text(&collector["exporters"]["prometheus"]["endpoint"])
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();

    let prometheus: Value = serde_yaml_ng::from_str(&repository_file("deploy/prometheus.yml")).unwrap();
    let targets = &prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0];
    assert_eq!(text(targets), format!("otel-collector:{port}"));

    let mut compose: Value = serde_yaml_ng::from_str(&repository_file("docker-compose.yml")).unwrap();
    compose.apply_merge().unwrap();
    for service in ["jaeger", "prometheus", "otel-collector"] {
        assert!(
            compose["services"].get(service).is_some(),
            "compose lacks {service}"
        );
    }
}
