//! A spinner on stderr while a component compiles for the first time.

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;
use std::time::Duration;
use warden::CompileEvent;

/// A compile hook for `RuntimeBuilder::on_compile`.
pub fn spinner() -> impl Fn(CompileEvent) + Send + Sync + 'static {
    let current: Mutex<Option<ProgressBar>> = Mutex::new(None);
    move |event| on_compile(&current, event)
}

fn on_compile(current: &Mutex<Option<ProgressBar>>, event: CompileEvent) {
    let mut slot = current.lock().unwrap_or_else(|p| p.into_inner());
    match event {
        CompileEvent::Started { tool, identity } => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let tool = crate::shown(&tool);
            bar.set_message(format!(
                "compiling {tool} ({}…)",
                &identity.to_string()[..19]
            ));
            bar.enable_steady_tick(Duration::from_millis(100));
            if bar.is_hidden() {
                crate::out::errln!("compiling {tool} ({identity}); cached for later runs");
            }
            *slot = Some(bar);
        }
        CompileEvent::Finished { tool, elapsed, .. } => {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
                if !bar.is_hidden() {
                    crate::out::errln!(
                        "compiled {} in {:.1}s",
                        crate::shown(&tool),
                        elapsed.as_secs_f64()
                    );
                }
            }
        }
    }
}
