//! What operators tell the engine, and why it may refuse.

use super::*;

/// An operator's command.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Acknowledge an unacknowledged alarm.
    Acknowledge {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Why.
        comment: String,
    },
    /// Shelve: stop annunciating it for a while.
    Shelve {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Why.
        comment: String,
        /// How long (at most the rule's `max_shelve`); `None`: one-shot,
        /// until the condition next returns to normal.
        duration: Option<Duration>,
    },
    /// End a shelve.
    Unshelve {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
    },
    /// Confirm an acknowledged alarm whose rule asks for confirmation.
    Confirm {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Why, or what was done.
        comment: String,
    },
    /// Reset a latched alarm whose condition has returned to normal.
    ResetLatch {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
    },
    /// Take out of service (maintenance).
    OutOfService {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Why.
        comment: String,
    },
    /// Put back in service.
    InService {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
    },
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No such alarm.
    #[error("no alarm {0:?}")]
    Unknown(AlarmKey),
    /// Acknowledging what is not waiting for it.
    #[error("alarm {0:?} is not unacknowledged")]
    NotUnacknowledged(AlarmKey),
    /// A shelve longer than the rule allows.
    #[error("alarm {key:?} may be shelved for at most {max:?}")]
    ShelveTooLong {
        /// Which.
        key: AlarmKey,
        /// The rule's maximum.
        max: Duration,
    },
    /// Unshelving what is not shelved, resetting what is not latched,
    /// or a latch whose condition is still active.
    #[error("alarm {key:?}: {why}")]
    NotNow {
        /// Which.
        key: AlarmKey,
        /// Why not.
        why: &'static str,
    },
}

impl Engine {
    /// An operator's command.
    pub fn handle_command(&mut self, cmd: Command, now: Now) -> Result<(), CommandError> {
        let now = now.unix_ms;
        let key = match &cmd {
            Command::Acknowledge { key, .. }
            | Command::Confirm { key, .. }
            | Command::Shelve { key, .. }
            | Command::Unshelve { key, .. }
            | Command::ResetLatch { key, .. }
            | Command::OutOfService { key, .. }
            | Command::InService { key, .. } => key.clone(),
        };
        let &i = self.index.get(&key).ok_or_else(|| CommandError::Unknown(key.clone()))?;
        let not_now = |why| Err(CommandError::NotNow { key: key.clone(), why });
        match cmd {
            Command::Acknowledge { user, comment, .. } => {
                let a = &mut self.alarms[i];
                if a.response != Response::Unacked {
                    return Err(CommandError::NotUnacknowledged(key));
                }
                a.response = if self.rules.rules[a.rule].confirm {
                    Response::Unconfirmed
                } else {
                    Response::Done
                };
                let closed = a.delay.output().is_none()
                    && a.latched.is_none()
                    && a.response == Response::Done;
                self.emit(i, now, EventKind::Acknowledged { user, comment, closed });
            }
            Command::Confirm { user, comment, .. } => {
                let a = &mut self.alarms[i];
                match a.response {
                    Response::Unconfirmed => {}
                    Response::Unacked => return not_now("acknowledge it first"),
                    Response::Done => return not_now("it is not waiting for confirmation"),
                }
                a.response = Response::Done;
                let closed = a.delay.output().is_none() && a.latched.is_none();
                self.emit(i, now, EventKind::Confirmed { user, comment, closed });
            }
            Command::Shelve { user, comment, duration, .. } => {
                let max = self.rules.rules[self.alarms[i].rule].max_shelve;
                if duration.is_some_and(|d| d > max) {
                    return Err(CommandError::ShelveTooLong { key, max });
                }
                let until = duration
                    .map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
                // The event itself is annunciated: people see it shelved.
                self.emit(i, now, EventKind::Shelved { user, comment, until });
                self.alarms[i].shelved = Some(until);
            }
            Command::Unshelve { user, .. } => {
                if self.alarms[i].shelved.take().is_none() {
                    return not_now("it is not shelved");
                }
                self.emit(i, now, EventKind::Unshelved { user: Some(user) });
            }
            Command::ResetLatch { user, .. } => {
                if self.alarms[i].latched.take().is_none() {
                    return not_now("it is not latched, or its condition is still active");
                }
                self.emit(i, now, EventKind::LatchReset { user });
                self.returned(i, now);
            }
            Command::OutOfService { user, comment, .. } => {
                if self.alarms[i].out_of_service {
                    return not_now("it is out of service already");
                }
                self.emit(i, now, EventKind::OutOfService { user, comment });
                self.alarms[i].out_of_service = true;
            }
            Command::InService { user, .. } => {
                if !self.alarms[i].out_of_service {
                    return not_now("it is in service");
                }
                self.alarms[i].out_of_service = false;
                self.emit(i, now, EventKind::InService { user });
            }
        }
        Ok(())
    }
}
