//! Who made a request, and the observers of garbage-collection runs. The
//! activity log itself is written by the core, in the transaction of the
//! change it describes.

use std::sync::Arc;

use registry_gc::RunReport;
use registry_gc::collector::GcObserver;

/// Who made a request: the client address, or the user name once the
/// request is authenticated. The server puts it in the request's extensions.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// Several observers of garbage-collection runs.
pub struct GcEvents(pub Vec<Arc<dyn GcObserver>>);

impl GcObserver for GcEvents {
    fn run_finished(&self, r: &RunReport) {
        for o in &self.0 {
            o.run_finished(r);
        }
    }
}
