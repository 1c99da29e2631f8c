//! A task that ends with its owner.

use tokio::task::JoinHandle;

/// Aborts a task when dropped: a connection's poller, a writer, an upkeep
/// loop must not outlive what owns them (an aborted owner would otherwise
/// leave, say, its MQTT connection open until the next keep-alive).
#[derive(Debug)]
pub struct AbortOnDrop<T = ()>(pub JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Aborts the task now.
    pub fn abort(&self) {
        self.0.abort();
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
