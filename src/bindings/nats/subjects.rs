//! The subjects, stream and buckets of one market (docs/design.md §10), under its namespace.

use crate::EventKind;

/// Every name a market uses on NATS. With namespace `ns`, subjects start with `ns.` and the
/// stream and buckets with `ns_`, so several markets share one cluster.
///
/// # Examples
///
/// ```
/// use capacity_auction::bindings::nats::Subjects;
///
/// let plain = Subjects::new(None)?;
/// assert_eq!(plain.bid("agent-1"), "market.bid.agent-1");
/// assert_eq!(plain.stream(), "audit_log");
/// let ns = Subjects::new(Some("blue"))?;
/// assert_eq!(ns.balance("agent-1"), "blue.economic.balance.agent-1");
/// assert_eq!(ns.prices_bucket(), "blue_market_prices");
/// assert!(Subjects::new(Some("a.b")).is_err());
/// # Ok::<(), capacity_auction::IdError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    namespace: Option<String>,
}

/// A request subject the service answers, with the token it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Bid(&'a str),
    Bids(&'a str),
    Cancel(&'a str),
    State(&'a str),
    Balance(&'a str),
    Transfer(&'a str),
    Deposit,
    Capacity,
    Clear,
    Status,
}

impl Route<'_> {
    /// The subject's pattern, as span names write it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Route::Bid(_) => "market.bid",
            Route::Bids(_) => "market.bids",
            Route::Cancel(_) => "market.cancel",
            Route::State(_) => "market.state",
            Route::Balance(_) => "economic.balance",
            Route::Transfer(_) => "economic.transfer",
            Route::Deposit => "admin.market.deposit",
            Route::Capacity => "admin.market.capacity",
            Route::Clear => "admin.market.clear",
            Route::Status => "admin.market.status",
        }
    }
}

impl Subjects {
    /// The names under `namespace` (none: the plain names).
    ///
    /// # Errors
    ///
    /// When the namespace is not 1 to 64 of `[A-Za-z0-9_-]`.
    pub fn new(namespace: Option<&str>) -> Result<Subjects, crate::IdError> {
        if let Some(ns) = namespace
            && !crate::capacity::is_token(ns)
        {
            return Err(crate::IdError(ns.to_owned()));
        }
        Ok(Subjects { namespace: namespace.map(str::to_owned) })
    }

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn subject(&self, rest: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}.{rest}"),
            None => rest.to_owned(),
        }
    }

    fn named(&self, base: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}_{base}"),
            None => base.to_owned(),
        }
    }

    /// `market.bid.<agent>`: one bid.
    pub fn bid(&self, agent: &str) -> String {
        self.subject(&format!("market.bid.{agent}"))
    }

    /// `market.bids.<agent>`: an array of bids.
    pub fn bids(&self, agent: &str) -> String {
        self.subject(&format!("market.bids.{agent}"))
    }

    /// `market.cancel.<agent>`.
    pub fn cancel(&self, agent: &str) -> String {
        self.subject(&format!("market.cancel.{agent}"))
    }

    /// `market.state.<resource>`: the latest `price_discovered` of a resource.
    pub fn state(&self, resource: &str) -> String {
        self.subject(&format!("market.state.{resource}"))
    }

    /// `economic.balance.<agent>`.
    pub fn balance(&self, agent: &str) -> String {
        self.subject(&format!("economic.balance.{agent}"))
    }

    /// `economic.transfer.<agent>`: credits from that agent.
    pub fn transfer(&self, agent: &str) -> String {
        self.subject(&format!("economic.transfer.{agent}"))
    }

    /// `admin.market.deposit`.
    pub fn deposit(&self) -> String {
        self.subject("admin.market.deposit")
    }

    /// `admin.market.capacity`.
    pub fn capacity(&self) -> String {
        self.subject("admin.market.capacity")
    }

    /// `admin.market.clear`.
    pub fn clear(&self) -> String {
        self.subject("admin.market.clear")
    }

    /// `admin.market.status`: the service's role, positions and health.
    pub fn status(&self) -> String {
        self.subject("admin.market.status")
    }

    /// Where an event of this kind is published: `system.market.<type>` or
    /// `system.economy.<type>`.
    pub fn event(&self, kind: &EventKind) -> String {
        let area = if kind.is_economy() { "economy" } else { "market" };
        self.subject(&format!("system.{area}.{}", kind.type_name()))
    }

    /// `system.market.bids_retained`: the `audit_log`'s runs of a cycle's retained losses.
    pub fn retained_losses(&self) -> String {
        self.subject(&format!("system.market.{}", crate::auction::lines::RUN))
    }

    /// `system.>`: every event.
    pub fn events(&self) -> String {
        self.subject("system.>")
    }

    /// The JetStream stream holding every event.
    pub fn stream(&self) -> String {
        self.named("audit_log")
    }

    /// The KV bucket of the latest `price_discovered` per resource.
    pub fn prices_bucket(&self) -> String {
        self.named("market_prices")
    }

    /// The KV bucket of each agent's balance.
    pub fn agents_bucket(&self) -> String {
        self.named("agent_state")
    }

    /// The JetStream stream holding the market's journal: every event, many per message.
    pub fn journal(&self) -> String {
        self.named("journal")
    }

    /// The subject the journal's messages are written to.
    pub fn journal_subject(&self) -> String {
        self.subject("journal")
    }

    /// The KV bucket holding the leader's lease.
    pub fn lease_bucket(&self) -> String {
        self.named("market_leader")
    }

    /// The Object Store bucket holding the market's snapshots.
    pub fn snapshots_bucket(&self) -> String {
        self.named("market_snapshots")
    }

    /// The wildcard subjects the service answers.
    pub(crate) fn served(&self) -> Vec<String> {
        ["market.bid.*", "market.bids.*", "market.cancel.*", "market.state.*"]
            .into_iter()
            .chain(["economic.balance.*", "economic.transfer.*", "admin.market.*"])
            .map(|s| self.subject(s))
            .collect()
    }

    /// What a request subject asks for, if the service answers it.
    pub(crate) fn route<'a>(&self, subject: &'a str) -> Option<Route<'a>> {
        let rest = match &self.namespace {
            Some(ns) => subject.strip_prefix(ns.as_str())?.strip_prefix('.')?,
            None => subject,
        };
        let mut tokens = rest.splitn(3, '.');
        let (area, verb, name) = (tokens.next()?, tokens.next()?, tokens.next()?);
        Some(match (area, verb) {
            ("market", "bid") => Route::Bid(name),
            ("market", "bids") => Route::Bids(name),
            ("market", "cancel") => Route::Cancel(name),
            ("market", "state") => Route::State(name),
            ("economic", "balance") => Route::Balance(name),
            ("economic", "transfer") => Route::Transfer(name),
            ("admin", "market") => match name {
                "deposit" => Route::Deposit,
                "capacity" => Route::Capacity,
                "clear" => Route::Clear,
                "status" => Route::Status,
                _ => return None,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_round_trip() {
        for ns in [None, Some("blue")] {
            let s = Subjects::new(ns).unwrap();
            assert_eq!(s.route(&s.bid("a-1")), Some(Route::Bid("a-1")));
            assert_eq!(s.route(&s.bids("a")), Some(Route::Bids("a")));
            assert_eq!(s.route(&s.cancel("a")), Some(Route::Cancel("a")));
            assert_eq!(s.route(&s.state("cpu")), Some(Route::State("cpu")));
            assert_eq!(s.route(&s.balance("a")), Some(Route::Balance("a")));
            assert_eq!(s.route(&s.transfer("a")), Some(Route::Transfer("a")));
            assert_eq!(s.route(&s.deposit()), Some(Route::Deposit));
            assert_eq!(s.route(&s.capacity()), Some(Route::Capacity));
            assert_eq!(s.route(&s.clear()), Some(Route::Clear));
            assert_eq!(s.route(&s.status()), Some(Route::Status));
            assert_eq!(s.route(&s.subject("admin.market.explode")), None);
            assert_eq!(s.route(&s.subject("market.bid")), None);
        }
        let blue = Subjects::new(Some("blue")).unwrap();
        assert_eq!(blue.route("market.bid.a"), None, "another namespace's subject");
        assert_eq!(blue.route("bluemarket.bid.a"), None);
        // A subject token with dots cannot come from a wildcard `*`, but it must not panic.
        assert_eq!(Subjects::new(None).unwrap().route("market.bid.a.b"), Some(Route::Bid("a.b")));
    }
}
