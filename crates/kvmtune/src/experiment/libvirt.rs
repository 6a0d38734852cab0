//! Variants of a libvirt domain: each is a whole definition of the same domain (a file, the
//! plan of `tune`, or edits of the current definition). The definition the experiment found is
//! journaled before the first change, with whether the domain ran, in the host-change journal
//! ([`crate::hostchange::journal`], kind `experiment`); each round defines its variant and
//! starts it, and stops it with `virsh destroy` (a variant's guest state is not kept). At the
//! end, on an error, on Ctrl-C, and after a `kill -9` with `--recover`, releasing the journal
//! destroys a variant still running, defines the original again and starts the domain if it
//! ran before.

use super::RunningVm;
use crate::config::edit::ConfigEdit;
use crate::config::libvirt_edit::apply_actions;
use crate::exits::record::Target;
use crate::host::Host;
use crate::host::libvirt::Libvirt;
use crate::hostchange::change::allowed::{domain_path, domain_xml_of};
use crate::hostchange::change::{ChangeKind, HostAction, Recompute};
use crate::hostchange::journal::{Journal, JournalError, JournalKind, Released};
use crate::values::CpuSet;

/// The domain an experiment runs its variants as, and the definition it found.
#[derive(Debug, Clone)]
pub struct Domain {
    pub libvirt: Libvirt,
    pub name: String,
    /// `virsh dumpxml --inactive` when the experiment began.
    pub original: String,
    pub was_running: bool,
}

impl Domain {
    /// Reads the domain's definition and state; refuses a domain that runs unless
    /// `restart_ok`.
    pub fn find(connect: Option<&str>, name: &str, restart_ok: bool) -> Result<Domain, String> {
        let libvirt = Libvirt::new(connect);
        let original = libvirt.domain_xml(name).map_err(|e| format!("domain {name}: {e}"))?;
        let was_running = libvirt.is_active(name).map_err(|e| format!("domain {name}: {e}"))?;
        if was_running && !restart_ok {
            return Err(format!(
                "domain {name} is running: an experiment stops and starts it with each variant (--restart-ok shuts it down first and starts it again at the end)"
            ));
        }
        Ok(Domain { libvirt, name: name.to_string(), original, was_running })
    }

    fn path(&self) -> String {
        domain_path(self.libvirt.uri(), &self.name)
    }

    /// A variant made of edits to the original definition.
    pub fn edited(&self, edits: &[ConfigEdit]) -> Result<String, String> {
        apply_actions(&self.original, edits).map_err(|e| e.to_string())
    }

    /// Checks a variant's definition before anything changes: the same domain (by name and,
    /// where it says one, UUID), and valid against libvirt's schema (`virt-xml-validate`).
    pub fn check_variant(&self, xml: &str) -> Result<(), String> {
        domain_xml_of(xml, &self.name)?;
        let uuid = |text: &str| {
            roxmltree::Document::parse(text).ok().and_then(|d| {
                d.root_element()
                    .children()
                    .find(|c| c.has_tag_name("uuid"))
                    .and_then(|u| u.text().map(|t| t.trim().to_lowercase()))
            })
        };
        if let (Some(variant), Some(original)) = (uuid(xml), uuid(&self.original))
            && variant != original
        {
            return Err(format!(
                "its <uuid> {variant} is not the domain's ({original}): libvirt would refuse it"
            ));
        }
        validate_schema(xml)
    }

    /// Journals the original definition (and state) and, with it running, shuts it down: the
    /// first change, before any variant.
    pub fn begin(&self, journal: &Journal, host: &Host) -> Result<(), JournalError> {
        let mut actions = Vec::new();
        if self.was_running {
            actions.push(HostAction {
                path: self.path(),
                old: Some("running".into()),
                new: "shut off".into(),
                why: "the experiment runs each variant in turn".into(),
                kind: ChangeKind::DomainRunning,
                recompute: Recompute::Constant,
            });
        }
        actions.push(HostAction {
            path: self.path(),
            old: Some(self.original.trim().to_string()),
            // Defined as found: each round then defines its variant over it.
            new: self.original.clone(),
            why: "the experiment defines each variant in turn".into(),
            kind: ChangeKind::DomainDefinition,
            recompute: Recompute::Constant,
        });
        journal.apply(JournalKind::Experiment, &self.name, &CpuSet::new(), &actions, host).map(drop)
    }

    /// Makes `xml` (a variant) the domain's definition.
    pub fn define(&self, xml: &str) -> Result<(), String> {
        self.libvirt.define_xml(xml).map_err(|e| e.to_string())
    }

    /// Starts the domain as it is defined now.
    pub fn start(&self) -> Result<DomainVm, String> {
        self.libvirt.start(&self.name).map_err(|e| e.to_string())?;
        Ok(DomainVm { domain: self.clone(), running: true })
    }
}

/// Gives the domain back as the experiment found it (its journal released).
pub fn restore(journal: &Journal, domain: &str, host: &Host) -> Result<Released, JournalError> {
    journal.release(JournalKind::Experiment, domain, host)
}

/// `virt-xml-validate FILE domain`, libvirt's own schema check; a host without it is not
/// refused here (libvirt checks again when each variant is defined).
fn validate_schema(xml: &str) -> Result<(), String> {
    let dir = super::private_temp_dir("kvmtune-variant").map_err(|e| e.to_string())?;
    let file = dir.path().join("variant.xml");
    std::fs::write(&file, xml).map_err(|e| format!("{}: {e}", file.display()))?;
    let path = file.to_string_lossy();
    match crate::host::command::run(
        "virt-xml-validate",
        &[&path, "domain"],
        std::time::Duration::from_secs(30),
    ) {
        Ok(ran) if ran.status.success() => Ok(()),
        Ok(ran) => Err(format!("libvirt's schema refuses it: {}", ran.stderr_line())),
        Err(crate::host::command::RunError::NotInstalled { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

pub struct DomainVm {
    domain: Domain,
    running: bool,
}

impl RunningVm for DomainVm {
    fn target(&self) -> Target {
        Target::Domain {
            name: self.domain.name.clone(),
            connect: self.domain.libvirt.uri().map(str::to_string),
        }
    }

    fn environment(&self) -> Vec<(String, String)> {
        let mut environment = vec![("KVMTUNE_DOMAIN".to_string(), self.domain.name.clone())];
        if let Some(uri) = self.domain.libvirt.uri() {
            environment.push(("LIBVIRT_DEFAULT_URI".to_string(), uri.to_string()));
        }
        environment
    }

    fn stop(&mut self) -> Result<(), String> {
        if !std::mem::take(&mut self.running) {
            return Ok(());
        }
        let libvirt = &self.domain.libvirt;
        match libvirt.is_active(&self.domain.name) {
            Ok(false) => Ok(()),
            _ => libvirt.destroy(&self.domain.name).map_err(|e| e.to_string()),
        }
    }
}

impl Drop for DomainVm {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// What `--recover` found and did, per domain.
pub fn recover(
    journal: &Journal,
    only: Option<&str>,
    host: &Host,
) -> Result<Vec<(String, Released)>, JournalError> {
    let mut done = Vec::new();
    for found in journal.status()? {
        if found.kind != JournalKind::Experiment || only.is_some_and(|name| name != found.vm) {
            continue;
        }
        let released = restore(journal, &found.vm, host)?;
        done.push((found.vm.clone(), released));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(xml: &str) -> Domain {
        Domain {
            libvirt: Libvirt::new(Some("test:///default")),
            name: "exp".into(),
            original: xml.into(),
            was_running: false,
        }
    }

    const ORIGINAL: &str = "<domain type='kvm'>\n  <name>exp</name>\n  <uuid>6f1c54e4-3c1b-4c55-9a8e-3b0d2f9a7c11</uuid>\n  <cpu mode='host-passthrough'/>\n  <clock offset='utc'/>\n</domain>\n";

    #[test]
    fn a_variant_must_be_the_same_domain() {
        let exp = domain(ORIGINAL);
        let other_name = ORIGINAL.replace("<name>exp</name>", "<name>other</name>");
        assert!(exp.check_variant(&other_name).unwrap_err().contains("`other`"));
        let other_uuid = ORIGINAL.replace("6f1c54e4", "00000000");
        assert!(exp.check_variant(&other_uuid).unwrap_err().contains("libvirt would refuse it"));
        assert!(exp.check_variant("not xml").unwrap_err().contains("not XML"));
    }

    #[test]
    fn edits_change_only_what_they_name() {
        let exp = domain(ORIGINAL);
        let edited = exp
            .edited(&[
                crate::config::edit::parse_spelled("hide-hypervisor").unwrap(),
                crate::config::edit::parse_spelled("hpet=off").unwrap(),
            ])
            .unwrap();
        assert!(edited.contains("<feature policy='disable' name='hypervisor'/>"), "{edited}");
        assert!(edited.contains("<timer name='hpet' present='no'/>"), "{edited}");
        assert!(edited.contains("<uuid>6f1c54e4-3c1b-4c55-9a8e-3b0d2f9a7c11</uuid>"));
    }
}
