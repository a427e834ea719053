//! `--new-id` and its companions, shared by `restore --from-image` and `migrate`: the config a
//! container gets under a new CTID (see `ferry_runtime::newid`), with the addresses asked for.

use anyhow::Result;
use ferry_runtime::ContainerConfig;

#[derive(Debug, Default, Clone, clap::Args)]
pub struct NewIdArgs {
    /// A copy under this CTID (vzmigrate's --new-id): its own CTID, MACs and --name (none
    /// unless given: names are unique on a host), addresses as --ipadd/--ipdel say.
    #[arg(long = "new-id", value_name = "NEWCTID")]
    pub new_id: Option<String>,
    /// With --new-id: its name.
    #[arg(long, requires = "new_id")]
    pub name: Option<String>,
    /// With --new-id: a venet address it gets; repeatable.
    #[arg(long, value_name = "IP", requires = "new_id")]
    pub ipadd: Vec<std::net::IpAddr>,
    /// With --new-id: an address of the original it drops ("all": every one); repeatable.
    #[arg(long, value_name = "IP|all", requires = "new_id")]
    pub ipdel: Vec<String>,
}

impl NewIdArgs {
    /// `cfg` under the new CTID, or None without --new-id.
    pub fn config(&self, cfg: &ContainerConfig) -> Result<Option<ContainerConfig>> {
        let Some(new) = &self.new_id else { return Ok(None) };
        let ct = super::new_ctid(new)?;
        let mut c = ferry_runtime::newid::renamed(cfg, &ct, self.name.as_deref())?;
        let net = super::opts::NetArgs { ipadd: self.ipadd.clone(), ipdel: self.ipdel.clone(), ..Default::default() };
        c.net = net.apply(&ct, &c.net)?;
        Ok(Some(c))
    }
}
