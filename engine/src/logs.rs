//! Logs. Besides `ctx.log` and the `LogSink` handed to steps, a `tracing` layer records
//! every event emitted while a step body runs into that run's `workflow_logs`, tagged
//! with run id, step key and attempt, so library code that only knows `tracing` still
//! lands in the right run's logs.

use std::fmt::Write as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::executor::LogSink;
use crate::model::LogLevel;

tokio::task_local! {
    /// The log sink of the step whose body is being polled right now.
    pub(crate) static STEP_LOG_SINK: LogSink;
}

/// A `tracing` layer that copies events emitted inside step bodies into the run's logs.
///
/// ```
/// use morpheus_engine::StepLogLayer;
/// use tracing_subscriber::prelude::*;
///
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::fmt::layer())
///     .with(StepLogLayer)
///     .init();
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StepLogLayer;

impl<S: Subscriber> Layer<S> for StepLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Outside a step (or outside any task) there is no run to log to.
        let _ = STEP_LOG_SINK.try_with(|sink| {
            let mut visitor = FieldCollector::default();
            event.record(&mut visitor);
            let level = match *event.metadata().level() {
                Level::TRACE => LogLevel::Trace,
                Level::DEBUG => LogLevel::Debug,
                Level::INFO => LogLevel::Info,
                Level::WARN => LogLevel::Warn,
                Level::ERROR => LogLevel::Error,
            };
            let mut fields = visitor.fields;
            fields.insert(
                "target".into(),
                Value::String(event.metadata().target().to_owned()),
            );
            sink.log(level, visitor.message, Some(Value::Object(fields)));
        });
    }
}

#[derive(Default)]
struct FieldCollector {
    message: String,
    fields: Map<String, Value>,
}

impl Visit for FieldCollector {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields
                .insert(field.name().to_owned(), Value::String(value.to_owned()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
        }
    }
}
