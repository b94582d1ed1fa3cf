//! Agent binding: a request authenticated by a token bound to one agent
//! acts only as that agent, whichever transport it came through.
//!
//! * writes: every memory's `agent_id` must be the bound agent;
//! * reads of many (list, search, export): without an agent filter they
//!   are narrowed to the bound agent; a filter on another agent is refused;
//! * reads and updates by id: the memory must be the bound agent's;
//! * everything that spans or manages agents (agents, sessions, deletes,
//!   the org's erasures and erasure receipts) is refused to an agent-bound
//!   token: an orchestrator holds an org key or an unbound token for those.
//!
//! Each service method states its rule (a check here, or a call that
//! carries one): a new method that reads or writes must add its own.
//!
//! Refusals are 403 with the bound agent named.

use super::{OrgService, ServiceError};
use crate::admission::auth::AuthError;
use std::borrow::Cow;

impl OrgService {
    /// This service acting only as `agent` (`None`: any agent of the org).
    pub fn bound_to(mut self, agent: Option<String>) -> Self {
        self.bound_agent = agent;
        self
    }

    /// The agent the request is bound to, if any.
    pub fn bound_agent(&self) -> Option<&str> {
        self.bound_agent.as_deref()
    }

    /// Refuses acting as `agent` when bound to another.
    pub(crate) fn check_agent(&self, agent: &str) -> Result<(), ServiceError> {
        match &self.bound_agent {
            Some(bound) if bound != agent => Err(AuthError::WrongAgent {
                bound: bound.clone(),
                asked: agent.to_owned(),
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Refuses `what` (it spans or manages agents) when bound.
    pub(crate) fn check_unbound(&self, what: &'static str) -> Result<(), ServiceError> {
        match &self.bound_agent {
            Some(bound) => Err(AuthError::AgentBound {
                bound: bound.clone(),
                what,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// `params` with its agent filter narrowed to the bound agent (set
    /// when absent, refused when another).
    pub(crate) fn narrowed<'a, P: Clone>(
        &self,
        params: &'a P,
        filter: impl Fn(&mut P) -> &mut Option<String>,
    ) -> Result<Cow<'a, P>, ServiceError> {
        let Some(bound) = &self.bound_agent else {
            return Ok(Cow::Borrowed(params));
        };
        let mut owned = params.clone();
        let asked = filter(&mut owned);
        match asked.as_deref() {
            Some(agent) => self.check_agent(agent)?,
            None => *asked = Some(bound.clone()),
        }
        Ok(Cow::Owned(owned))
    }
}
