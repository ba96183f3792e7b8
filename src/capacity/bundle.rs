//! [`Bundle`]: the shares of several resources wanted together, all or nothing.

use std::fmt;

use super::resource::{MAX_RESOURCES, ResourceId, Resources};
use super::share::Share;

/// Shares of one or more resources, wanted together; kept inline, sorted by resource.
///
/// # Examples
///
/// ```
/// use capacity_auction::{Bundle, Resources};
///
/// let resources = Resources::new(["cpu", "memory", "tokens"])?;
/// let bundle = Bundle::from_names(&resources, [("cpu", "0.1"), ("tokens", "0.02")])?;
/// assert_eq!(bundle.len(), 2);
/// assert_eq!(bundle.share(resources.find("tokens").unwrap()).unwrap().to_string(), "0.02");
/// assert!(bundle.share(resources.find("memory").unwrap()).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bundle {
    len: u8,
    resources: [u8; MAX_RESOURCES],
    shares: [u32; MAX_RESOURCES],
}

/// Why a set of shares is not a bundle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// No shares at all.
    #[error("a bundle names at least one resource")]
    Empty,
    /// A resource named twice.
    #[error("resource `{0}` appears twice in the bundle")]
    Duplicate(String),
    /// A name the market does not sell.
    #[error("the market sells no resource `{0}`")]
    UnknownResource(String),
    /// A share that is not in `(0, 1]` with at most 6 decimals.
    #[error("share of `{resource}`: {message}")]
    InvalidShare {
        /// The resource whose share is bad.
        resource: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Bundle {
    /// The bundle of `items`.
    ///
    /// # Errors
    ///
    /// [`BundleError::Empty`] without items, [`BundleError::Duplicate`] when a resource repeats.
    pub fn new<I>(items: I) -> Result<Bundle, BundleError>
    where
        I: IntoIterator<Item = (ResourceId, Share)>,
    {
        let mut bundle = Bundle { len: 0, resources: [0; MAX_RESOURCES], shares: [0; MAX_RESOURCES] };
        for (resource, share) in items {
            let n = usize::from(bundle.len);
            let at = bundle.resources[..n].partition_point(|&r| r < resource.0);
            if at < n && bundle.resources[at] == resource.0 {
                return Err(BundleError::Duplicate(format!("#{}", resource.0)));
            }
            if n == MAX_RESOURCES {
                return Err(BundleError::Duplicate(format!("#{}", resource.0)));
            }
            bundle.resources.copy_within(at..n, at + 1);
            bundle.shares.copy_within(at..n, at + 1);
            bundle.resources[at] = resource.0;
            bundle.shares[at] = share.micros();
            bundle.len += 1;
        }
        if bundle.len == 0 {
            return Err(BundleError::Empty);
        }
        Ok(bundle)
    }

    /// The bundle of `(name, share)` pairs, names resolved in `resources`.
    ///
    /// # Errors
    ///
    /// Any [`BundleError`], with the offending name.
    pub fn from_names<'a, I>(resources: &Resources, items: I) -> Result<Bundle, BundleError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut parsed = Vec::new();
        for (name, share) in items {
            let id = resources.find(name).ok_or_else(|| BundleError::UnknownResource(name.to_owned()))?;
            let share = share.parse::<Share>().map_err(|e| BundleError::InvalidShare {
                resource: name.to_owned(),
                message: e.to_string(),
            })?;
            if parsed.iter().any(|&(r, _)| r == id) {
                return Err(BundleError::Duplicate(name.to_owned()));
            }
            parsed.push((id, share));
        }
        Bundle::new(parsed)
    }

    /// How many resources the bundle names (at least one).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a bundle names at least one resource.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bundle's shares, by resource.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (ResourceId, Share)> + '_ {
        let n = self.len();
        self.resources[..n]
            .iter()
            .zip(&self.shares[..n])
            .map(|(&r, &s)| (ResourceId(r), Share::from_micros(s).expect("checked on entry")))
    }

    /// `(resource index, share in millionths)` pairs: the form the clearing loops read.
    pub(crate) fn raw(&self) -> impl ExactSizeIterator<Item = (usize, u32)> + Clone + '_ {
        let n = self.len();
        self.resources[..n].iter().map(|&r| usize::from(r)).zip(self.shares[..n].iter().copied())
    }

    /// The share of `resource`, if the bundle names it.
    pub fn share(&self, resource: ResourceId) -> Option<Share> {
        self.iter().find(|&(r, _)| r == resource).map(|(_, s)| s)
    }

    /// The sum of the bundle's shares, in millionths.
    pub fn total_micros(&self) -> u64 {
        self.shares[..self.len()].iter().map(|&s| u64::from(s)).sum()
    }

    /// A bitmask of the resources named.
    pub(crate) fn mask(&self) -> u16 {
        self.resources[..self.len()].iter().fold(0, |m, &r| m | (1 << r))
    }
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter().map(|(r, s)| (r.0, s))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(s: &str) -> Share {
        s.parse().unwrap()
    }

    #[test]
    fn sorted_and_checked() {
        let b = Bundle::new([(ResourceId(2), share("0.2")), (ResourceId(0), share("0.1"))]).unwrap();
        let items: Vec<_> = b.raw().collect();
        assert_eq!(items, vec![(0, 100_000), (2, 200_000)]);
        assert_eq!(b.total_micros(), 300_000);
        assert_eq!(b.mask(), 0b101);
        assert_eq!(Bundle::new([]), Err(BundleError::Empty));
        assert!(matches!(
            Bundle::new([(ResourceId(1), share("0.1")), (ResourceId(1), share("0.2"))]),
            Err(BundleError::Duplicate(_))
        ));
    }

    #[test]
    fn names_resolve() {
        let r = Resources::new(["cpu", "memory"]).unwrap();
        assert!(matches!(
            Bundle::from_names(&r, [("gpu", "0.1")]),
            Err(BundleError::UnknownResource(n)) if n == "gpu"
        ));
        assert!(matches!(Bundle::from_names(&r, [("cpu", "1.5")]), Err(BundleError::InvalidShare { .. })));
        assert!(matches!(
            Bundle::from_names(&r, [("cpu", "0.5"), ("cpu", "0.1")]),
            Err(BundleError::Duplicate(n)) if n == "cpu"
        ));
    }
}
