//! Exit codes: which kind of failure ended a command, so that a script can tell "not
//! there" from "server down" from "refused" without reading the message. The codes
//! are decided here, in [`Exit::of`], and listed in `oakctl --help` by [`help`].

use client::kubeconfig::KubeconfigError;
use client::ClientError;

/// How `oakctl` ends. The numbers are a promise to scripts; `oakctl --help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Ok = 0,
    /// The API server refused a request (an error other than not found), or the
    /// command failed in another way (e.g. `delete --wait` timed out).
    Failed = 1,
    /// Bad usage or input: unknown flags or kinds, an invalid manifest, a server URL
    /// that is not one, a context missing from the config file, a kubeconfig that
    /// cannot be read or used (missing, a context, cluster or user not there, bad CA or
    /// client certificate).
    Usage = 2,
    /// The API server could not be reached (or its certificate was refused).
    Unreachable = 3,
    /// An object named on the command line does not exist.
    NotFound = 4,
    /// `oakctl diff` only (where 1 means "differences found"): the API server refused
    /// a request, what [`Exit::Failed`] is for the other commands.
    DiffRefused = 5,
}

impl Exit {
    /// Every exit code, in the order `--help` lists them.
    pub const ALL: [Exit; 6] = [
        Exit::Ok,
        Exit::Failed,
        Exit::Usage,
        Exit::Unreachable,
        Exit::NotFound,
        Exit::DiffRefused,
    ];

    /// What the code means, in the words of `--help`.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "done",
            Exit::Failed => "the API server refused a request (other than not found), or the command failed otherwise",
            Exit::Usage => "usage or input error: bad flags, unknown kind, invalid manifest, bad server URL, context or kubeconfig",
            Exit::Unreachable => "the API server could not be reached (or its TLS certificate was refused)",
            Exit::NotFound => "an object that was asked for does not exist",
            Exit::DiffRefused => "oakctl diff: the API server refused a request (diff exits 0 when nothing would change, 1 when something would)",
        }
    }

    /// The code of a failure of `oakctl diff`, where 1 says "differences found" (as
    /// kubectl's diff, every error is more than 1): [`Exit::Failed`] becomes
    /// [`Exit::DiffRefused`], the others stay.
    pub fn for_diff(self) -> Exit {
        match self {
            Exit::Failed => Exit::DiffRefused,
            other => other,
        }
    }

    /// The exit code for an error of the API client.
    pub fn of_client(error: &ClientError) -> Exit {
        if error.is_transport() {
            Exit::Unreachable
        } else if error.is_not_found() {
            Exit::NotFound
        } else if matches!(error, ClientError::BadUrl(_) | ClientError::Tls(_)) {
            Exit::Usage
        } else {
            Exit::Failed
        }
    }

    /// The exit code for a kubeconfig that cannot be used: [`Exit::Usage`], or that of
    /// the client error it carries.
    pub fn of_kubeconfig(error: &KubeconfigError) -> Exit {
        match error {
            KubeconfigError::Client { cause, .. } => Exit::of_client(cause),
            _ => Exit::Usage,
        }
    }

    /// The exit code for the error that ended a command: a [`Failure`]'s, wherever it
    /// sits among the error's contexts (it is the decision made where the error
    /// happened); else that of the first [`ClientError`] or [`KubeconfigError`] among
    /// its causes; else [`Exit::Failed`].
    pub fn of(error: &anyhow::Error) -> Exit {
        if let Some(failure) = error.downcast_ref::<Failure>() {
            return failure.exit;
        }
        error
            .chain()
            .find_map(|cause| {
                if let Some(e) = cause.downcast_ref::<ClientError>() {
                    Some(Exit::of_client(e))
                } else {
                    cause
                        .downcast_ref::<KubeconfigError>()
                        .map(Exit::of_kubeconfig)
                }
            })
            .unwrap_or(Exit::Failed)
    }

    /// One code for several failures (e.g. some of the objects of a `delete`): theirs if
    /// they all agree, else [`Exit::Failed`].
    pub fn common(codes: impl IntoIterator<Item = Exit>) -> Exit {
        let mut codes = codes.into_iter();
        let Some(first) = codes.next() else {
            return Exit::Ok;
        };
        if codes.all(|c| c == first) {
            first
        } else {
            Exit::Failed
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// An error whose exit code was decided where it happened. It shows as its message
/// alone, so wrapping a failure in one does not change what the user reads.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The code `oakctl` exits with.
    pub exit: Exit,
    /// What is printed after `error: `.
    pub message: String,
}

impl Failure {
    /// A failure with the given code, as an [`anyhow::Error`] to return with `?`.
    pub fn error(exit: Exit, message: impl Into<String>) -> anyhow::Error {
        Failure {
            exit,
            message: message.into(),
        }
        .into()
    }

    /// A usage or input error (exit code 2).
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Failure::error(Exit::Usage, message)
    }

    /// An end with `exit` and no message (`oakctl diff` found differences: it printed
    /// them already).
    pub fn silent(exit: Exit) -> anyhow::Error {
        Failure::error(exit, "")
    }
}

/// The exit codes as `oakctl --help` lists them below the commands.
pub fn help() -> String {
    let mut text = String::from("Exit status:\n");
    for exit in Exit::ALL {
        text.push_str(&format!("  {}  {}\n", exit as u8, exit.meaning()));
    }
    text.push_str("  A closed output pipe (`oakctl get … | head`) ends oakctl quietly with 0.");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> ClientError {
        ClientError::Api {
            status: Box::new(crds::Status::failure(code, reason, "refused")),
        }
    }

    /// A real transport error: nothing listens on port 1 of the loopback address.
    async fn unreachable() -> ClientError {
        client::Client::new("http://127.0.0.1:1")
            .unwrap()
            .get_text("/")
            .await
            .expect_err("nothing listens on 127.0.0.1:1")
    }

    #[tokio::test]
    async fn client_errors_map_to_codes() {
        let cases = [
            (api(404, "NotFound"), Exit::NotFound),
            (api(409, "Conflict"), Exit::Failed),
            (api(422, "Invalid"), Exit::Failed),
            (api(500, "InternalError"), Exit::Failed),
            (api(503, "ServiceUnavailable"), Exit::Failed),
            (
                ClientError::Decode {
                    url: "http://x".into(),
                    message: "bad".into(),
                },
                Exit::Failed,
            ),
            (ClientError::BadUrl("nonsense".into()), Exit::Usage),
            (
                client::Client::new("https://127.0.0.1:1").unwrap_err(),
                Exit::Usage,
            ),
            (unreachable().await, Exit::Unreachable),
        ];
        for (error, expected) in cases {
            assert_eq!(Exit::of_client(&error), expected, "{error:?}");
        }
    }

    #[test]
    fn a_failure_decides_else_the_client_error() {
        let cases: Vec<(anyhow::Error, Exit)> = vec![
            (anyhow::anyhow!("something else"), Exit::Failed),
            (Failure::usage("give KIND NAME"), Exit::Usage),
            (
                anyhow::Error::from(api(404, "NotFound")).context("reading it"),
                Exit::NotFound,
            ),
            (
                Failure::usage("bad config").context("reading the config"),
                Exit::Usage,
            ),
            (
                anyhow::Error::from(KubeconfigError::NoCurrentContext { path: "/k".into() }),
                Exit::Usage,
            ),
            (
                anyhow::Error::from(KubeconfigError::Client {
                    path: "/k".into(),
                    cause: ClientError::Decode {
                        url: "http://x".into(),
                        message: "bad".into(),
                    },
                }),
                Exit::Failed,
            ),
            (
                anyhow::Error::from(api(404, "NotFound"))
                    .context(Failure {
                        exit: Exit::Failed,
                        message: "outer".into(),
                    })
                    .context("top"),
                Exit::Failed,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(Exit::of(&error), expected, "{error:#}");
        }
    }

    #[test]
    fn several_failures_share_a_code_only_when_they_agree() {
        use Exit::*;
        let cases: [(&[Exit], Exit); 5] = [
            (&[], Ok),
            (&[NotFound], NotFound),
            (&[NotFound, NotFound], NotFound),
            (&[NotFound, Failed], Failed),
            (&[Unreachable, NotFound, Unreachable], Failed),
        ];
        for (codes, expected) in cases {
            assert_eq!(Exit::common(codes.iter().copied()), expected, "{codes:?}");
        }
    }

    #[test]
    fn diff_failures_are_more_than_one() {
        use Exit::*;
        let cases = [
            (Ok, Ok),
            (Failed, DiffRefused),
            (Usage, Usage),
            (Unreachable, Unreachable),
            (NotFound, NotFound),
            (DiffRefused, DiffRefused),
        ];
        for (exit, expected) in cases {
            assert_eq!(exit.for_diff(), expected, "{exit:?}");
        }
        for exit in Exit::ALL {
            assert!(exit == Ok || exit.for_diff() as u8 > 1, "{exit:?}");
        }
    }

    #[test]
    fn help_lists_every_code() {
        let text = help();
        for exit in Exit::ALL {
            assert!(
                text.contains(&format!("  {}  {}", exit as u8, exit.meaning())),
                "{text}"
            );
        }
    }
}
