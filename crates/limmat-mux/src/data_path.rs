//! [`DataPath`]: how a pipe between two plain TCP connections moves its bytes, the relay's
//! `--data-path` and the tunnel's, defined once here because both ends choose alike.

/// How a pipe between two plain TCP connections moves its bytes (`--data-path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPath {
    /// Copy through user space until a direction moves bulk data, then `splice(2)` it (Linux;
    /// elsewhere copies).
    #[default]
    Auto,
    /// `splice(2)` from the first byte (Linux; elsewhere copies).
    Splice,
    /// Always copy through user space.
    Copy,
}

impl DataPath {
    /// The splice mode this path asks for, or `None` to copy.
    #[cfg(target_os = "linux")]
    pub fn splice_mode(self) -> Option<crate::splice::Mode> {
        match self {
            DataPath::Auto => Some(crate::splice::Mode::Auto),
            DataPath::Splice => Some(crate::splice::Mode::Splice),
            DataPath::Copy => None,
        }
    }
}

impl std::str::FromStr for DataPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DataPath::Auto),
            "splice" => Ok(DataPath::Splice),
            "copy" => Ok(DataPath::Copy),
            _ => Err(format!("{s:?} is not a data path: auto, splice or copy")),
        }
    }
}
