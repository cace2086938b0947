//! Maps keyed by client address or connection, touched for every event and every
//! report row. A flood of attempts from many addresses makes them the agent's
//! hottest structures; foldhash hashes these small keys several times faster than
//! SipHash, std's default, and still seeds each map at random, so addresses an
//! attacker chooses cannot be aimed at one bucket without knowing the seed.

/// A `HashMap` with [`foldhash`]'s hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A `HashSet` with [`foldhash`]'s hasher.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
