//! A libvirt domain's persistent definition (what `virsh dumpxml --inactive` prints), replaced
//! by another of the same domain: an experiment's variant. `path` is `libvirt:URI#DOMAIN`
//! ([`super::allowed::domain_target`]; an empty URI is virsh's default connection). Made by
//! `virsh define`, after `virsh destroy` when the domain runs (a variant kvmtune started);
//! undone the same way with the original XML, so that whatever variant is defined or running
//! when it is undone, the domain ends defined as it was and not running.
//!
//! libvirt is reached here directly, not through a capability of [`Host`]: the connection is
//! part of the change's target, and the tests run it against a real libvirtd.

use super::{Change, HostAction, HostChangeError, Outcome, failed_write as failed};
use crate::host::Host;
use crate::host::libvirt::Libvirt;
use crate::values::escape::shell;

pub struct DomainDefinition;

impl Change for DomainDefinition {
    fn allowed(&self, path: &str, new: &str, original: &[u8]) -> Result<(), String> {
        let (_, domain) = super::allowed::domain_target(path)?;
        // Only a definition of this same domain may be written, now or at undo.
        for xml in [new.as_bytes(), original].into_iter().filter(|x| !x.is_empty()) {
            super::allowed::domain_xml_of(&String::from_utf8_lossy(xml), domain)?;
        }
        Ok(())
    }

    fn read_original(&self, path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        let (uri, domain) = super::allowed::domain_target(path).map_err(|why| failed(path, host, why))?;
        let xml = Libvirt::new(uri).domain_xml(domain).map_err(|e| HostChangeError::Read {
            path: path.to_string(),
            host: host.describe(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Some(xml.into_bytes()))
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        let (uri, domain) = super::allowed::domain_target(path).map_err(|why| failed(path, host, why))?;
        let libvirt = Libvirt::new(uri);
        if libvirt.is_active(domain).map_err(|e| failed(path, host, e))? {
            libvirt.destroy(domain).map_err(|e| failed(path, host, e))?;
        }
        libvirt.define_xml(&String::from_utf8_lossy(value)).map_err(|e| failed(path, host, e))?;
        Ok(Outcome::Made)
    }

    fn describe(&self, action: &HostAction) -> String {
        format!("{}: its definition replaced ({} bytes of XML)", action.path, action.new.len())
    }

    fn shell(&self, action: &HostAction) -> String {
        let (uri, domain) = super::allowed::domain_target(&action.path).unwrap_or((None, ""));
        let connect = uri.map(|u| format!(" -c {}", shell(u))).unwrap_or_default();
        format!("virsh{connect} destroy {domain}; virsh{connect} define VARIANT.xml", domain = shell(domain))
    }

    fn undo_text(&self) -> &'static str {
        "the original definition defined again (a variant still running destroyed first)"
    }
}
