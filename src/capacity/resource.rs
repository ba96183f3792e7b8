//! The resources a market sells, named once in its configuration and referred to by index.

use std::fmt;
use std::sync::Arc;

/// Most resources one market sells.
pub const MAX_RESOURCES: usize = 16;

/// The position of a resource in its market's configured list (`0..resources.len()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId(pub(crate) u8);

impl ResourceId {
    /// The resource at `index` of a market's list, if the index can be one (`< 16`).
    pub fn from_index(index: usize) -> Option<ResourceId> {
        (index < MAX_RESOURCES).then_some(ResourceId(index as u8))
    }

    /// The index of the resource in its market's list.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Why a list of resource names is not a market's resources.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourcesError {
    /// No names, or more than [`MAX_RESOURCES`].
    #[error("a market sells 1 to {MAX_RESOURCES} resources, got {0}")]
    Count(usize),
    /// A name that is not `[A-Za-z0-9_-]{{1,64}}`.
    #[error("resource name `{0}` is not 1 to 64 of [A-Za-z0-9_-]")]
    Name(String),
    /// The same name twice.
    #[error("resource `{0}` is listed twice")]
    Duplicate(String),
}

/// The named resources of a market, in the order events list them.
///
/// # Examples
///
/// ```
/// use capacity_auction::Resources;
///
/// let r = Resources::new(["cpu", "memory"])?;
/// assert_eq!(r.len(), 2);
/// assert_eq!(r.name(r.find("memory").unwrap()), "memory");
/// assert!(r.find("gpu").is_none());
/// # Ok::<(), capacity_auction::ResourcesError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Resources {
    names: Arc<[Arc<str>]>,
}

impl Resources {
    /// The resources named `names`, in that order.
    ///
    /// # Errors
    ///
    /// When there are none or more than 16, a name is not a valid token, or one repeats.
    pub fn new<I, S>(names: I) -> Result<Resources, ResourcesError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<Arc<str>> = Vec::new();
        for name in names {
            let name = name.as_ref();
            if !is_token(name) {
                return Err(ResourcesError::Name(name.to_owned()));
            }
            if list.iter().any(|n| &**n == name) {
                return Err(ResourcesError::Duplicate(name.to_owned()));
            }
            list.push(name.into());
        }
        if list.is_empty() || list.len() > MAX_RESOURCES {
            return Err(ResourcesError::Count(list.len()));
        }
        Ok(Resources { names: list.into() })
    }

    /// How many resources there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a market sells at least one resource.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The resource called `name`.
    pub fn find(&self, name: &str) -> Option<ResourceId> {
        self.names.iter().position(|n| &**n == name).map(|i| ResourceId(i as u8))
    }

    /// The name of `id`.
    ///
    /// # Panics
    ///
    /// When `id` does not come from this list.
    pub fn name(&self, id: ResourceId) -> &str {
        &self.names[id.index()]
    }

    /// The shared name of `id`, cheap to clone into events.
    pub(crate) fn shared_name(&self, id: ResourceId) -> Arc<str> {
        self.names[id.index()].clone()
    }

    /// Every resource in configured order.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = ResourceId> + '_ {
        (0..self.names.len()).map(|i| ResourceId(i as u8))
    }

    /// Every name in configured order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.names.iter().map(|n| &**n)
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Whether `s` is 1 to 64 of `[A-Za-z0-9_-]`: safe as a NATS subject token.
pub(crate) fn is_token(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_lists() {
        assert_eq!(Resources::new(Vec::<&str>::new()), Err(ResourcesError::Count(0)));
        assert!(matches!(Resources::new(["cpu", "cpu"]), Err(ResourcesError::Duplicate(_))));
        assert!(matches!(Resources::new(["c.pu"]), Err(ResourcesError::Name(_))));
        let many: Vec<String> = (0..17).map(|i| format!("r{i}")).collect();
        assert_eq!(Resources::new(&many), Err(ResourcesError::Count(17)));
    }

    #[test]
    fn tokens() {
        assert!(is_token("agent-1_A"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
        assert!(!is_token(&"x".repeat(65)));
    }
}
