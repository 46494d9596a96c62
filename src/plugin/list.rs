//! `kubectl weir list rollouts [-A] [-o json|yaml]`.

use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use crate::api::Rollout;
use crate::api::rollout::RolloutStrategy;

use super::EXIT_OK;
use super::error::PluginError;
use super::kubeconfig::ClusterArgs;
use super::output::print;
use super::snapshot::{not_found_or, set_weight_at};
use super::style::{Style, age, table};

/// Output formats of commands that list things.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A table.
    Table,
    /// A `v1/List` as JSON.
    Json,
    /// A `v1/List` as YAML.
    Yaml,
}

/// Flags of `list`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  kubectl weir list rollouts\n  kubectl weir list rollouts -A\n  kubectl weir list rollouts -o yaml"
)]
pub struct ListArgs {
    /// The kind: `rollouts` (or `rollout`, `ro`).
    #[arg(default_value = "rollouts")]
    pub kind: String,
    /// List Rollouts in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
}

/// Renders items in a format; `table` uses `row` and `header`.
pub fn render_list(items: &[Value], format: Format) -> Result<String, PluginError> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    match format {
        Format::Json => serde_json::to_string_pretty(&list)
            .map(|s| s + "\n")
            .map_err(|e| PluginError::Output(e.to_string())),
        Format::Yaml => {
            serde_saphyr::to_string(&list).map_err(|e| PluginError::Output(e.to_string()))
        }
        Format::Table => Err(PluginError::Output("a table needs columns".into())),
    }
}

/// The table row of a Rollout.
pub fn row(ro: &Rollout, with_namespace: bool, now: jiff::Timestamp, style: Style) -> Vec<String> {
    let status = ro.status.clone().unwrap_or_default();
    let (strategy, step, set_weight) = match &ro.spec.strategy {
        RolloutStrategy::Canary(c) => {
            let total = i32::try_from(c.steps.len()).unwrap_or(i32::MAX);
            let index = status.current_step_index.unwrap_or(0).clamp(0, total);
            let step = if total == 0 {
                "-".to_string()
            } else {
                format!("{}/{total}", (index + 1).min(total))
            };
            let weight = if index >= total {
                "-".to_string()
            } else {
                set_weight_at(&c.steps, index).to_string()
            };
            ("Canary", step, weight)
        }
        RolloutStrategy::BlueGreen(_) => ("BlueGreen", "-".to_string(), "-".to_string()),
    };
    let phase = match (status.abort, status.phase) {
        (true, _) => style.bad("Aborted"),
        (false, Some(p)) => style.phase(p.as_str()),
        (false, None) => "-".to_string(),
    };
    let mut cells = Vec::new();
    if with_namespace {
        cells.push(ro.metadata.namespace.clone().unwrap_or_default());
    }
    cells.extend([
        ro.metadata.name.clone().unwrap_or_default(),
        strategy.to_string(),
        phase,
        step,
        set_weight,
        status
            .weights
            .map_or_else(|| "-".to_string(), |w| w.canary.to_string()),
        ro.spec.replicas().to_string(),
        status.replicas.to_string(),
        status.updated_replicas.to_string(),
        status.available_replicas.to_string(),
        ro.metadata.creation_timestamp.as_ref().map_or_else(
            || "-".to_string(),
            |t| age(now.as_second() - t.0.as_second()),
        ),
    ]);
    cells
}

/// Runs `list`.
pub async fn run(cluster: &ClusterArgs, args: ListArgs, style: Style) -> Result<u8, PluginError> {
    if !["rollouts", "rollout", "ro"].contains(&args.kind.to_ascii_lowercase().as_str()) {
        return Err(PluginError::Usage(format!(
            "unknown kind {:?}: kubectl weir list shows rollouts",
            args.kind
        )));
    }
    let conn = cluster.connect().await?;
    let api: Api<Rollout> = if args.all_namespaces {
        Api::all(conn.client.clone())
    } else {
        Api::namespaced(conn.client.clone(), &conn.namespace)
    };
    let mut items = api
        .list(&ListParams::default())
        .await
        .map_err(|e| not_found_or(e, "rollout", &conn.namespace, ""))?
        .items;
    items.sort_by_key(|r| (r.metadata.namespace.clone(), r.metadata.name.clone()));
    let text = match args.output {
        Format::Table => {
            if items.is_empty() {
                let scope = if args.all_namespaces {
                    "any namespace".to_string()
                } else {
                    format!("namespace {}", conn.namespace)
                };
                eprintln!("No rollouts found in {scope}.");
                return Ok(EXIT_OK);
            }
            let now = jiff::Timestamp::now();
            let mut header = vec![];
            if args.all_namespaces {
                header.push("NAMESPACE");
            }
            header.extend([
                "NAME",
                "STRATEGY",
                "STATUS",
                "STEP",
                "SET-WEIGHT",
                "ACTUAL-WEIGHT",
                "DESIRED",
                "CURRENT",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
            ]);
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|r| row(r, args.all_namespaces, now, style))
                .collect();
            table(&header, &rows)
        }
        format => {
            let values = items
                .iter()
                .map(|r| serde_json::to_value(r).map_err(|e| PluginError::Output(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            render_list(&values, format)?
        }
    };
    print(&text)?;
    Ok(EXIT_OK)
}
