//! Job requests (SPEC §3.17): the jobs live in the daemon; these calls start, list, wait for,
//! collect, stop and remove them.

use crate::{Client, ClientError};
use tether_proto::{JobChunk, JobInfo, JobQuery, JobStart, Request, Response};

impl Client {
    async fn jobs(&mut self, req: Request) -> Result<Vec<JobInfo>, ClientError> {
        match self.call(req).await? {
            Response::Jobs(v) => Ok(v),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Session configurations (`config list|show`).
    pub async fn configs(
        &mut self,
        q: tether_proto::ConfigQuery,
    ) -> Result<Vec<tether_proto::ConfigInfo>, ClientError> {
        match self.call(Request::Configs(q)).await? {
            Response::Configs(v) => Ok(v),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Starts a job (`invoke --as-job`); busy sessions fail it at once.
    pub async fn job_start(&mut self, req: JobStart) -> Result<JobInfo, ClientError> {
        let mut v = self.jobs(Request::JobStart(req)).await?;
        v.pop()
            .ok_or_else(|| ClientError::Protocol("no job in the reply".into()))
    }

    pub async fn job_list(&mut self, q: JobQuery) -> Result<Vec<JobInfo>, ClientError> {
        self.jobs(Request::JobList(q)).await
    }

    /// Waits for jobs to end (or one, with `any`); an error once the timeout passes.
    pub async fn job_wait(&mut self, q: JobQuery) -> Result<Vec<JobInfo>, ClientError> {
        self.jobs(Request::JobWait(q)).await
    }

    pub async fn job_stop(&mut self, q: JobQuery) -> Result<Vec<JobInfo>, ClientError> {
        self.jobs(Request::JobStop(q)).await
    }

    pub async fn job_remove(&mut self, q: JobQuery) -> Result<(), ClientError> {
        self.call(Request::JobRemove(q)).await.map(|_| ())
    }

    /// Collects job output, passing each batch to `each` as it arrives (with `wait`, until
    /// the jobs end).
    pub async fn job_receive(
        &mut self,
        q: JobQuery,
        mut each: impl FnMut(Vec<JobChunk>) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        let mut r = self.call(Request::JobReceive(q)).await?;
        loop {
            match r {
                Response::JobOutput(chunks) => each(chunks)?,
                Response::Ok => return Ok(()),
                other => return Err(ClientError::Protocol(format!("{other:?}"))),
            }
            r = match self.reader.read::<Response>().await? {
                Some(Response::Error(e)) => return Err(e.into()),
                Some(r) => r,
                None => return Err(ClientError::Lost("the daemon closed the connection".into())),
            };
        }
    }
}
