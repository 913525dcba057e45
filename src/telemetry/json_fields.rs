//! The JSON log format's span fields, written as JSON text as they are
//! recorded.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// Span fields for the JSON format, written straight into the span's JSON
/// object text when the span opens.
///
/// The stock `JsonFields` builds a map of JSON values and serialises it,
/// several allocations per field, and every call opens a span whether or
/// not it logs anything (BENCHMARKS.md, "A cheaper authenticated path").
/// The JSON event formatter reads the text back as an object, so the text
/// must stay one JSON object; a field recorded twice keeps its last value
/// there.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        writer.write_char('{')?;
        let mut object = JsonObject::new(&mut writer, true);
        fields.record(&mut object);
        object.finish()
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Reopen the object: drop its closing brace and go on writing.
        let first = match current.fields.strip_suffix('}') {
            Some(open) => {
                let empty = open == "{";
                current.fields.truncate(open.len());
                empty
            }
            None => {
                current.fields.clear();
                current.fields.push('{');
                true
            }
        };
        let mut writer = current.as_writer();
        let mut object = JsonObject::new(&mut writer, first);
        fields.record(&mut object);
        object.finish()
    }
}

/// Writes `"name":value` pairs of one JSON object as fields are visited.
struct JsonObject<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl<'a, 'w> JsonObject<'a, 'w> {
    /// Goes on after an object's `{` (written already); `first`: nothing
    /// follows the brace yet.
    fn new(writer: &'a mut Writer<'w>, first: bool) -> Self {
        Self {
            writer,
            first,
            result: Ok(()),
        }
    }

    fn entry(&mut self, field: &Field, value: &impl serde::Serialize) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            ","
        };
        self.result = self
            .writer
            .write_str(separator)
            .and_then(|()| write_json(self.writer, name))
            .and_then(|()| self.writer.write_char(':'))
            .and_then(|()| write_json(self.writer, value));
    }

    fn finish(self) -> fmt::Result {
        self.result?;
        self.writer.write_char('}')
    }
}

impl Visit for JsonObject<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, &format!("{value:?}"));
    }
}

/// `value` as JSON text (serde_json escapes), into a `fmt::Write`.
fn write_json(writer: &mut Writer<'_>, value: &(impl serde::Serialize + ?Sized)) -> fmt::Result {
    struct Adaptor<'a, 'w>(&'a mut Writer<'w>);
    impl std::io::Write for Adaptor<'_, '_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            // serde_json writes whole UTF-8 sequences at a time.
            let text = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
            self.0.write_str(text).map_err(std::io::Error::other)?;
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Adaptor(writer), value).map_err(|_| fmt::Error)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::MakeWriter;

    use crate::telemetry::json_subscriber;

    /// Collects every written line.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Lines {
        type Writer = Lines;

        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    fn logged(body: impl FnOnce()) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let subscriber = json_subscriber(EnvFilter::new("info"), lines.clone()).finish();
        tracing::subscriber::with_default(subscriber, body);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect()
    }

    #[test]
    fn an_event_in_a_call_span_carries_the_span_fields_as_json() {
        let path = "/hookplane.v1.SubscriptionService/ResolveSubscribers";
        let lines = logged(|| {
            let span = tracing::info_span!("call", method = %path, request_id = %"req \"1\"\n");
            let _entered = span.enter();
            tracing::warn!(attempt = 2, "something happened");
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["message"], "something happened");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["span"]["name"], "call");
        assert_eq!(line["span"]["method"], path);
        // Quotes and control characters are escaped, not written raw.
        assert_eq!(line["span"]["request_id"], "req \"1\"\n");
    }

    #[test]
    fn fields_recorded_later_join_the_same_object() {
        let lines = logged(|| {
            let span = tracing::info_span!(
                "call",
                method = "/a/B",
                outcome = tracing::field::Empty,
                r#type = 7u64,
                ok = true
            );
            span.record("outcome", "done");
            let _entered = span.enter();
            tracing::info!("finished");
        });
        let span = &lines[0]["span"];
        assert_eq!(span["method"], "/a/B");
        assert_eq!(span["outcome"], "done");
        assert_eq!(span["type"], 7);
        assert_eq!(span["ok"], true);
    }

    #[test]
    fn a_span_without_fields_is_an_empty_object_and_takes_fields_later() {
        let lines = logged(|| {
            let span = tracing::info_span!("bare", late = tracing::field::Empty);
            {
                let _entered = span.enter();
                tracing::info!("before");
            }
            span.record("late", -3i64);
            let _entered = span.enter();
            tracing::info!("after");
        });
        assert_eq!(lines[0]["span"], serde_json::json!({"name": "bare"}));
        assert_eq!(lines[1]["span"]["late"], -3);
    }
}
