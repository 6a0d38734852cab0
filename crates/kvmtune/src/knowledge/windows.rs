//! Facts about Windows editions that decide how much of a VM's hardware they use.

/// The most CPU sockets (packages) a Windows edition uses, by its `EditionID` (registry
/// `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion`): Home one, Pro (and Enterprise,
/// Education) two, Pro for Workstations four; the server editions far more than a VM has
/// (None). Sources: Microsoft, Compare Windows editions (Home: one CPU socket); Microsoft,
/// Announcing Windows 10 Pro for Workstations
/// (blogs.windows.com/business/2017/08/10/microsoft-announces-windows-10-pro-workstations:
/// Pro two sockets, Pro for Workstations four).
pub fn socket_limit(edition: &str) -> Option<u32> {
    if edition.starts_with("Server") {
        None
    } else if edition.starts_with("Core") {
        Some(1)
    } else if edition.starts_with("ProfessionalWorkstation") {
        Some(4)
    } else {
        Some(CLIENT_SOCKETS)
    }
}

/// What an unknown client edition is taken to use: Pro's two sockets.
pub const CLIENT_SOCKETS: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editions_read_as_microsoft_names_them() {
        assert_eq!(socket_limit("Core"), Some(1));
        assert_eq!(socket_limit("CoreSingleLanguage"), Some(1));
        assert_eq!(socket_limit("Professional"), Some(2));
        assert_eq!(socket_limit("Enterprise"), Some(2));
        assert_eq!(socket_limit("ProfessionalWorkstation"), Some(4));
        assert_eq!(socket_limit("ServerStandard"), None);
    }
}
