//! The project templates and the limits table, both from the design's deploy
//! architecture: what a project gets when `morpheus.yaml` says nothing, and the most
//! it may ask for.

use serde::{Deserialize, Serialize};

/// Bytes in a kibibyte, mebibyte, gibibyte, tebibyte.
const KI: u64 = 1024;
const MI: u64 = KI * 1024;
const GI: u64 = MI * 1024;
const TI: u64 = GI * 1024;

/// Which template a project starts from (`template:` in `morpheus.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TemplateName {
    /// A GPU-enabled AI agent.
    AiAgent,
    /// A Model Context Protocol server.
    McpServer,
    /// A static or dynamic website.
    Website,
    /// Full control: the project states its CPU and memory.
    Custom,
}

impl TemplateName {
    /// Every template, for tables and help texts.
    pub const ALL: [TemplateName; 4] = [
        TemplateName::AiAgent,
        TemplateName::McpServer,
        TemplateName::Website,
        TemplateName::Custom,
    ];

    /// The name as written in `morpheus.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateName::AiAgent => "ai-agent",
            TemplateName::McpServer => "mcp-server",
            TemplateName::Website => "website",
            TemplateName::Custom => "custom",
        }
    }
}

impl std::fmt::Display for TemplateName {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A GPU request: how many of which model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRequest {
    /// How many.
    pub units: u32,
    /// The model as Akash providers name it (`rtx4090`, `h100`).
    pub model: String,
}

/// A template's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Its name.
    pub name: TemplateName,
    /// What it is for.
    pub description: &'static str,
    /// Cores, or `None` when the project must say (`custom`).
    pub cpu: Option<f64>,
    /// Memory (`4Gi`), or `None` when the project must say (`custom`).
    pub memory: Option<&'static str>,
    /// The root volume.
    pub storage: &'static str,
    /// The GPU, if the template wants one.
    pub gpu: Option<GpuRequest>,
    /// The container port served to the world on port 80, if any.
    pub http_port: Option<u32>,
    /// The most it offers per block for each service, in uakt.
    pub price_uakt: u64,
}

/// The template of that name, with the design's defaults.
///
/// ```
/// use morpheus_workflows::akash::templates::{template, TemplateName};
/// let agent = template(TemplateName::AiAgent);
/// assert_eq!(agent.cpu, Some(2.0));
/// assert_eq!(agent.gpu.unwrap().model, "rtx4090");
/// ```
pub fn template(name: TemplateName) -> Template {
    match name {
        TemplateName::AiAgent => Template {
            name,
            description: "GPU-enabled AI agent",
            cpu: Some(2.0),
            memory: Some("4Gi"),
            storage: LIMITS.storage.default,
            gpu: Some(GpuRequest {
                units: 1,
                model: "rtx4090".into(),
            }),
            http_port: Some(8000),
            // A GPU lease costs far more than a CPU one; bids above this are ignored.
            price_uakt: 100_000,
        },
        TemplateName::McpServer => Template {
            name,
            description: "Model Context Protocol server",
            cpu: Some(0.5),
            memory: Some("512Mi"),
            storage: LIMITS.storage.default,
            gpu: None,
            http_port: Some(8080),
            price_uakt: 10_000,
        },
        TemplateName::Website => Template {
            name,
            description: "Static or dynamic website",
            cpu: Some(0.5),
            memory: Some("256Mi"),
            storage: LIMITS.storage.default,
            gpu: None,
            http_port: Some(3000),
            price_uakt: 10_000,
        },
        TemplateName::Custom => Template {
            name,
            description: "Full configuration control",
            cpu: None,
            memory: None,
            storage: LIMITS.storage.default,
            gpu: None,
            http_port: None,
            price_uakt: 10_000,
        },
    }
}

/// One row of the limits table for a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimit {
    /// The default, as written (`4Gi`).
    pub default: &'static str,
    /// The maximum, as written (`64Gi`).
    pub max: &'static str,
    /// The maximum in bytes.
    pub max_bytes: u64,
}

/// The design's limits table.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Cores: default 2, max 32.
    pub cpu_default: f64,
    /// The most cores one service may ask for.
    pub cpu_max: f64,
    /// Memory: default 4Gi, max 64Gi.
    pub memory: SizeLimit,
    /// Storage: default 10Gi, max 1Ti.
    pub storage: SizeLimit,
    /// GPU: default one RTX 4090.
    pub gpu_default: (u32, &'static str),
    /// GPU: at most eight (of the biggest, H100).
    pub gpu_max_units: u32,
}

/// The limits every service of a project is held to.
pub const LIMITS: Limits = Limits {
    cpu_default: 2.0,
    cpu_max: 32.0,
    memory: SizeLimit {
        default: "4Gi",
        max: "64Gi",
        max_bytes: 64 * GI,
    },
    storage: SizeLimit {
        default: "10Gi",
        max: "1Ti",
        max_bytes: TI,
    },
    gpu_default: (1, "rtx4090"),
    gpu_max_units: 8,
};

/// Bytes of a Kubernetes-style size (`512Mi`, `4Gi`, `1Ti`, `500M`, `1G`), or `None`
/// when it is not one. Fractions are allowed (`1.5Gi`) and rounded up, as Akash does.
pub fn parse_size(size: &str) -> Option<u64> {
    let digits_end = size
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(size.len());
    let (number, unit) = size.split_at(digits_end);
    let value: f64 = number.parse().ok()?;
    let multiplier = match unit {
        "Ki" => KI,
        "Mi" => MI,
        "Gi" => GI,
        "Ti" => TI,
        "k" | "K" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "T" => 1000 * 1000 * 1000 * 1000,
        _ => return None,
    };
    let bytes = (value * multiplier as f64).ceil();
    (bytes.is_finite() && bytes > 0.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_carry_the_designs_defaults() {
        // (template, cpu, memory, gpu)
        let table = [
            (
                TemplateName::AiAgent,
                Some(2.0),
                Some("4Gi"),
                Some((1, "rtx4090")),
            ),
            (TemplateName::McpServer, Some(0.5), Some("512Mi"), None),
            (TemplateName::Website, Some(0.5), Some("256Mi"), None),
            (TemplateName::Custom, None, None, None),
        ];
        for (name, cpu, memory, gpu) in table {
            let template = template(name);
            assert_eq!(template.cpu, cpu, "{name}");
            assert_eq!(template.memory, memory, "{name}");
            assert_eq!(
                template
                    .gpu
                    .as_ref()
                    .map(|gpu| (gpu.units, gpu.model.as_str())),
                gpu,
                "{name}"
            );
            assert_eq!(template.storage, "10Gi", "{name}");
        }
    }

    #[test]
    fn the_limits_table_is_the_designs() {
        assert_eq!((LIMITS.cpu_default, LIMITS.cpu_max), (2.0, 32.0));
        assert_eq!((LIMITS.memory.default, LIMITS.memory.max), ("4Gi", "64Gi"));
        assert_eq!(parse_size(LIMITS.memory.max), Some(LIMITS.memory.max_bytes));
        assert_eq!(
            (LIMITS.storage.default, LIMITS.storage.max),
            ("10Gi", "1Ti")
        );
        assert_eq!(
            parse_size(LIMITS.storage.max),
            Some(LIMITS.storage.max_bytes)
        );
        assert_eq!(LIMITS.gpu_default, (1, "rtx4090"));
        assert_eq!(LIMITS.gpu_max_units, 8);
    }

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        let table = [
            ("512Mi", Some(512 * MI)),
            ("4Gi", Some(4 * GI)),
            ("1Ti", Some(TI)),
            ("1.5Gi", Some(3 * GI / 2)),
            ("500M", Some(500_000_000)),
            ("1G", Some(1_000_000_000)),
            ("4gb", None),
            ("4", None),
            ("Gi", None),
            ("0Gi", None),
        ];
        for (size, expected) in table {
            assert_eq!(parse_size(size), expected, "{size}");
        }
    }

    #[test]
    fn template_names_read_as_written() {
        for name in TemplateName::ALL {
            let read: TemplateName = serde_yaml::from_str(name.as_str()).unwrap();
            assert_eq!(read, name);
        }
    }
}
