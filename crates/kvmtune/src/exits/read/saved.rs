//! kvmtune's own saved profiles: the JSON form of [`ExitProfile`] that `exits record` and
//! `exits analyze --format json` write, one profile or a list of them.

use crate::exits::model::ExitProfile;
use crate::exits::read::text::Pasted;
use crate::exits::read::{ExitParseError, Format};

pub const FORMAT: Format = Format { name: "kvmtune JSON", sniff, read };

fn profiles(text: &str) -> Option<Vec<ExitProfile>> {
    serde_json::from_str::<Vec<ExitProfile>>(text)
        .ok()
        .or_else(|| serde_json::from_str::<ExitProfile>(text).ok().map(|profile| vec![profile]))
}

fn sniff(pasted: &Pasted) -> bool {
    let start = pasted.text.trim_start();
    (start.starts_with('{') || start.starts_with('[')) && profiles(pasted.text).is_some()
}

fn read(pasted: &Pasted) -> Result<Vec<ExitProfile>, ExitParseError> {
    Ok(profiles(pasted.text).unwrap_or_default())
}
