//! What is sold: named resources, exact shares of them, slots and windows of time, bundles,
//! and the timeline of capacity offered and sold.

mod bundle;
pub(crate) mod fixed;
mod resource;
mod share;
mod slot;
mod timeline;

pub use bundle::{Bundle, BundleError};
pub(crate) use resource::is_token;
pub use resource::{MAX_RESOURCES, ResourceId, Resources, ResourcesError};
pub use share::{Capacity, CapacitySlots, Share, UnitError};
pub use slot::{Slot, Window};
pub use timeline::Timeline;
