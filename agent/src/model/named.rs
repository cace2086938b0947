//! One name per enum variant, for every output.
//!
//! `named!` gives an enum `as_str()` and `ALL` from one list. The names must be
//! the ones serde writes in the JSON report; `tests::names_are_the_serde_names`
//! checks every enum declared with it, so the JSON, the Prometheus labels, the
//! text table and the HTML page cannot drift apart.

/// `named!(Type { Variant => "name", ... })`.
macro_rules! named {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The variant's name, as in the JSON report.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
