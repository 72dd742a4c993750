//! `tether job …` and `invoke --as-job` (SPEC §3.17): jobs run in the client daemon; these
//! commands start, list, wait for, collect, stop and remove them.

use super::dur;
use super::error::CliResult;
use super::output::{Rows, job_state_colour};
use super::stream::{Prefixer, json_line, stream_name, write_fd};
use clap::{Args, Subcommand};
use std::collections::HashMap;
use std::time::Duration;
use tether_client::{Client, JobChild, JobInfo, JobQuery, JobStart};

#[derive(Args, Debug)]
pub struct JobArgs {
    #[command(subcommand)]
    cmd: JobCmd,
}

#[derive(Subcommand, Debug)]
enum JobCmd {
    /// List jobs (Get-Job).
    #[command(after_help = "Examples:\n  tether job list\n  tether job list 3 --json")]
    List {
        /// Only these jobs (default: all).
        #[arg(add = super::completions::jobs())]
        ids: Vec<u32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Wait until jobs end (Wait-Job).
    #[command(
        after_help = "Examples:\n  tether job wait 1 --timeout 10m\n  tether job wait --any 2 3 --json"
    )]
    Wait {
        /// The jobs to wait for (default: all).
        #[arg(add = super::completions::jobs())]
        ids: Vec<u32>,
        /// Return when the first of them ends.
        #[arg(long)]
        any: bool,
        /// Give up after this long (exit status 4).
        #[arg(long, value_parser = dur::parse)]
        timeout: Option<Duration>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the output jobs produced so far (Receive-Job).
    #[command(
        after_help = "Examples:\n  tether job receive 1\n  tether job receive 1 --keep\n  tether job receive 1 --wait > build.log"
    )]
    Receive {
        /// The jobs whose output to print (default: all).
        #[arg(add = super::completions::jobs())]
        ids: Vec<u32>,
        /// Keep the output for the next receive.
        #[arg(long)]
        keep: bool,
        /// Go on until the jobs end.
        #[arg(long)]
        wait: bool,
        /// Do not prefix lines with the job's location when there are several.
        #[arg(long)]
        hide_computer_name: bool,
        /// Print JSON lines instead of raw output.
        #[arg(long)]
        json: bool,
    },
    /// Stop jobs (Stop-Job).
    #[command(after_help = "Examples:\n  tether job stop 1\n  tether job stop --json")]
    Stop {
        /// The jobs to stop (default: all).
        #[arg(add = super::completions::jobs())]
        ids: Vec<u32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget jobs (Remove-Job); a running one only with --force.
    #[command(after_help = "Examples:\n  tether job remove 1 2\n  tether job remove 3 --force")]
    Remove {
        /// The jobs to forget.
        #[arg(required = true, add = super::completions::jobs())]
        ids: Vec<u32>,
        /// Stop a running job first.
        #[arg(long)]
        force: bool,
    },
    /// Start a background job inside a session: it sees the session's state, runs beside its
    /// commands, and survives disconnects.
    #[command(
        after_help = "Examples:\n  tether job start -s web './backup.sh'\n  tether job start -s web --json 'sleep 600; make'"
    )]
    Start {
        /// The session (Name or Id) to start the job in.
        #[arg(short = 's', long, add = super::completions::sessions())]
        session: String,
        /// The script to run.
        script: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(a: JobArgs) -> CliResult {
    let mut client = super::connect().await?;
    match a.cmd {
        JobCmd::List { ids, json } => {
            let jobs = client.job_list(query(ids)).await?;
            print_jobs(&jobs, json);
            Ok(0)
        }
        JobCmd::Wait {
            ids,
            any,
            timeout,
            json,
        } => {
            let q = JobQuery {
                any,
                timeout_ms: timeout.map(|d| d.as_millis() as u64),
                ..query(ids)
            };
            let jobs = client.job_wait(q).await?;
            print_jobs(&jobs, json);
            Ok(0)
        }
        JobCmd::Receive {
            ids,
            keep,
            wait,
            hide_computer_name,
            json,
        } => {
            let q = JobQuery {
                keep,
                wait,
                ..query(ids)
            };
            receive(&mut client, q, hide_computer_name, json).await
        }
        JobCmd::Stop { ids, json } => {
            let jobs = client.job_stop(query(ids)).await?;
            print_jobs(&jobs, json);
            Ok(0)
        }
        JobCmd::Remove { ids, force } => {
            let q = JobQuery {
                force,
                ..query(ids)
            };
            client.job_remove(q).await?;
            Ok(0)
        }
        JobCmd::Start {
            session,
            script,
            json,
        } => {
            if super::sessions::session_words("--session", std::slice::from_ref(&session))?.len()
                != 1
            {
                return Err(super::error::CliError::usage(
                    "job start --session takes one session",
                ));
            }
            let child = JobChild {
                location: session.clone(),
                spec: tether_client::InvokeSpec {
                    session,
                    script: script.clone(),
                    ..Default::default()
                },
            };
            let job = client
                .job_start(JobStart {
                    command: script,
                    children: vec![child],
                    in_session: true,
                })
                .await?;
            print_jobs(&[job], json);
            Ok(0)
        }
    }
}

fn query(ids: Vec<u32>) -> JobQuery {
    JobQuery {
        ids,
        ..Default::default()
    }
}

/// `invoke --as-job`: one child per target; prints the job.
pub async fn start(
    mut client: Client,
    command: String,
    children: Vec<JobChild>,
    json: bool,
) -> CliResult {
    let job = client
        .job_start(JobStart {
            command,
            children,
            in_session: false,
        })
        .await?;
    print_jobs(&[job], json);
    Ok(0)
}

/// Prints job output: one child's raw, several children's prefixed by location per line.
async fn receive(client: &mut Client, q: JobQuery, hide: bool, json: bool) -> CliResult {
    let several = {
        let jobs = client.job_list(query(q.ids.clone())).await?;
        jobs.iter().map(|j| j.children.len()).sum::<usize>() > 1
    };
    let mut prefixers: HashMap<(u32, String), Prefixer> = HashMap::new();
    client
        .job_receive(q, |chunks| {
            for c in chunks {
                if json {
                    json_line(serde_json::json!({
                        "job": c.job,
                        "computer": c.location,
                        "stream": stream_name(c.stream),
                        "data": String::from_utf8_lossy(&c.data),
                    }));
                } else if several && !hide {
                    prefixers
                        .entry((c.job, c.location.clone()))
                        .or_insert_with(|| Prefixer::new(format!("{}: ", c.location).into_bytes()))
                        .push(c.stream, &c.data);
                } else {
                    write_fd(c.stream, &c.data);
                }
            }
            Ok(())
        })
        .await?;
    for p in prefixers.values_mut() {
        p.finish();
    }
    Ok(0)
}

fn print_jobs(jobs: &[JobInfo], json: bool) {
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(jobs).unwrap_or_else(|_| "[]".into())
        );
        return;
    }
    if jobs.is_empty() {
        return;
    }
    let mut rows = Rows::new(vec![
        "Id",
        "Name",
        "State",
        "HasMoreData",
        "Location",
        "Command",
    ])
    .colour_column(2, job_state_colour);
    for j in jobs {
        let command: String = j
            .command
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect();
        rows.push(vec![
            j.id.to_string(),
            j.name.clone(),
            j.state.clone(),
            if j.has_more_data { "True" } else { "False" }.to_string(),
            j.location.clone(),
            command,
        ]);
    }
    rows.print();
}
