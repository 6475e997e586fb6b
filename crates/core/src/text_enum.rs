//! States stored as text in PostgreSQL (order and task status, market event status, task kind, price
//! basis) are enums in Rust. Each needs the same four things, written once here: the list of its values,
//! its text, parsing that text back, and `TryFrom<String>` (what `#[sqlx(try_from = "String")]` calls), so
//! a new state is one line in one table.

/// `text_enum! { #[attrs] pub enum Name("what it is, for errors") { Variant => "text", ... } }`
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident($what:literal) {
            $($(#[$variant_meta:meta])* $variant:ident => $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in PostgreSQL and shown in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|value| value.as_str() == text)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> std::result::Result<Self, String> {
                Self::parse(&text).ok_or_else(|| format!(concat!("unknown ", $what, " {:?}"), text))
            }
        }
    };
}
