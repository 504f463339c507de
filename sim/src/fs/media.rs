//! A volume's contents: an in-memory tree of directories and files with real bytes. The media
//! belongs to the volume, not to a mount: it survives dismount and remount.

use std::collections::BTreeMap;

use crate::nt::attr;

/// A node index in a [`Media`].
pub type NodeId = u32;

/// The root directory.
pub const ROOT: NodeId = 0;

/// Node contents.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A directory: children in creation order and an index by upper-cased name.
    Dir {
        /// Children in creation order.
        children: Vec<NodeId>,
        /// Upper-cased name to child.
        index: BTreeMap<String, NodeId>,
    },
    /// A file's bytes.
    File {
        /// The data.
        data: Vec<u8>,
    },
}

/// One file or directory.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its name as created (case preserved); empty for the root.
    pub name: String,
    /// Its directory.
    pub parent: Option<NodeId>,
    /// Directory or file.
    pub kind: NodeKind,
    /// `FILE_ATTRIBUTE_*`.
    pub attributes: u32,
    /// Creation, last access, last write and change times (system time, 100 ns since 1601).
    pub times: [i64; 4],
    /// The file index (`FileInternalInformation`), unique on the volume.
    pub id: u64,
    /// False once deleted.
    pub live: bool,
    /// Its reparse point (`FSCTL_SET_REPARSE_POINT`, [`super::reparse`]), if it has one.
    pub reparse: Option<ReparsePoint>,
    /// Its named data streams by upper-cased name ([`super::streams`]).
    pub streams: BTreeMap<String, NodeId>,
    /// For a named data stream: the file or directory it belongs to (its `parent` is None).
    pub host: Option<NodeId>,
    /// The file was deleted while one of its named streams was open: it goes at the last
    /// cleanup of any of its streams. A named stream: its file was overwritten while it was
    /// open; it goes at its own last cleanup ([`super::streams`]).
    pub doomed: bool,
}

/// A reparse point: its tag and the buffer it was set with (`REPARSE_DATA_BUFFER` or
/// `REPARSE_GUID_DATA_BUFFER`, header included, `Reserved` zero).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReparsePoint {
    /// `ReparseTag`.
    pub tag: u32,
    /// The whole buffer.
    pub buffer: Vec<u8>,
}

impl Node {
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }

    /// The file's size (0 for directories).
    pub fn size(&self) -> u64 {
        match &self.kind {
            NodeKind::File { data } => data.len() as u64,
            NodeKind::Dir { .. } => 0,
        }
    }

    /// The file's bytes (empty for directories).
    pub fn data(&self) -> &[u8] {
        match &self.kind {
            NodeKind::File { data } => data,
            NodeKind::Dir { .. } => &[],
        }
    }
}

/// Why a path did not resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The last component is missing; its directory exists (it is the payload).
    NameNotFound(NodeId),
    /// An intermediate directory is missing.
    PathNotFound,
    /// An intermediate component is a file.
    NotADirectory,
}

/// The contents of one volume.
#[derive(Clone, Debug)]
pub struct Media {
    /// Every node ever created (deleted ones stay, not live).
    pub nodes: Vec<Node>,
    /// Volume serial number.
    pub serial: u32,
    /// Volume label.
    pub label: String,
    /// When the volume was formatted.
    pub created: i64,
    next_id: u64,
}

/// The system time the simulated machine boots at (1 January 2026, 100 ns units since 1601).
pub const EPOCH_2026: i64 = 134_116_128_000_000_000;

/// Upper-cases a name for lookups (case-insensitive, case-preserving file systems), character by
/// character as NTFS's upcase table does (choice, docs/simulator.md: every file system here
/// compares names so): `fsfilter::text::upcase_char` where it follows the table (U+0000 to
/// U+017F, U+0370 to U+0513, full-width Latin), Unicode's simple upper case elsewhere. Never
/// Unicode's full mapping: `straße` and `STRASSE` are two names, and so are `fıle` and `FILE`.
pub fn upcase(name: &str) -> String {
    name.chars().map(upcase_char).collect()
}

/// One character of [`upcase`].
pub fn upcase_char(c: char) -> char {
    let u = c as u32;
    if u <= 0x17F || (0x370..=0x513).contains(&u) || (0xFF00..=0xFFEF).contains(&u) {
        return fsfilter::text::upcase_char(c);
    }
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(one), None) => one,
        _ => c,
    }
}

impl Media {
    /// Empty media with a root directory.
    pub fn new(serial: u32, label: &str, now: i64) -> Media {
        let root = Node {
            name: String::new(),
            parent: None,
            kind: NodeKind::Dir { children: Vec::new(), index: BTreeMap::new() },
            attributes: attr::DIRECTORY,
            times: [now; 4],
            id: 5,
            live: true,
            reparse: None,
            streams: BTreeMap::new(),
            host: None,
            doomed: false,
        };
        Media { nodes: vec![root], serial, label: label.to_owned(), created: now, next_id: 64 }
    }

    /// A node.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// A node, mutably.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// The child of `dir` named `name` (case-insensitive).
    pub fn child(&self, dir: NodeId, name: &str) -> Option<NodeId> {
        match &self.node(dir).kind {
            NodeKind::Dir { index, .. } => index.get(&upcase(name)).copied(),
            NodeKind::File { .. } => None,
        }
    }

    /// Resolves `components` from `start`.
    pub fn lookup(&self, start: NodeId, components: &[&str]) -> Result<NodeId, Lookup> {
        let mut cur = start;
        for (i, c) in components.iter().enumerate() {
            if !self.node(cur).is_dir() {
                return Err(Lookup::NotADirectory);
            }
            match self.child(cur, c) {
                Some(n) => cur = n,
                None if i + 1 == components.len() => return Err(Lookup::NameNotFound(cur)),
                None => return Err(Lookup::PathNotFound),
            }
        }
        Ok(cur)
    }

    /// The first reparse point that resolving `components` from `start` meets: the index of the
    /// component that names it and its node. An intermediate component's reparse point always
    /// counts, the last one's only when `last` (a create without `FILE_OPEN_REPARSE_POINT`). The
    /// walk stops, finding none, where the path stops resolving.
    pub fn reparse_on_path(
        &self,
        start: NodeId,
        components: &[&str],
        last: bool,
    ) -> Option<(usize, NodeId)> {
        let mut cur = start;
        for (i, c) in components.iter().enumerate() {
            cur = self.child(cur, c)?;
            let final_component = i + 1 == components.len();
            if self.node(cur).reparse.is_some() && (!final_component || last) {
                return Some((i, cur));
            }
        }
        None
    }

    /// Creates a file or directory in `dir` (which must not have a child of that name).
    pub fn create(
        &mut self,
        dir: NodeId,
        name: &str,
        is_dir: bool,
        attributes: u32,
        now: i64,
    ) -> NodeId {
        let id = self.nodes.len() as NodeId;
        self.next_id += 1;
        let kind = if is_dir {
            NodeKind::Dir { children: Vec::new(), index: BTreeMap::new() }
        } else {
            NodeKind::File { data: Vec::new() }
        };
        // FILE_ATTRIBUTE_REPARSE_POINT comes with a reparse point only
        // (`FSCTL_SET_REPARSE_POINT`), never with a create's attributes.
        let attributes = attributes & !super::reparse::FILE_ATTRIBUTE_REPARSE_POINT;
        // A file has the settable attributes asked with FILE_ATTRIBUTE_ARCHIVE, a directory
        // them with FILE_ATTRIBUTE_DIRECTORY (FastFat's FatCreateNewFile and
        // FatCreateNewDirectory; docs/simulator.md, "Dispositions").
        let attributes = if is_dir {
            attr::DIRECTORY | (attributes & attr::SETTABLE)
        } else {
            (attributes & attr::SETTABLE) | attr::ARCHIVE
        };
        self.nodes.push(Node {
            name: name.to_owned(),
            parent: Some(dir),
            kind,
            attributes,
            times: [now; 4],
            id: self.next_id,
            live: true,
            reparse: None,
            streams: BTreeMap::new(),
            host: None,
            doomed: false,
        });
        self.link(dir, id);
        self.node_mut(dir).times[2] = now;
        id
    }

    fn link(&mut self, dir: NodeId, id: NodeId) {
        let key = upcase(&self.node(id).name);
        if let NodeKind::Dir { children, index } = &mut self.node_mut(dir).kind {
            children.push(id);
            index.insert(key, id);
        }
    }

    fn unlink(&mut self, id: NodeId) {
        let Some(dir) = self.node(id).parent else { return };
        let key = upcase(&self.node(id).name);
        if let NodeKind::Dir { children, index } = &mut self.node_mut(dir).kind {
            children.retain(|c| *c != id);
            index.remove(&key);
        }
    }

    /// Deletes a node (a directory must be empty).
    pub fn remove(&mut self, id: NodeId) {
        // A named stream goes alone; a file takes its named streams with it.
        if self.remove_stream_parts(id) {
            return;
        }
        self.unlink(id);
        let n = self.node_mut(id);
        n.live = false;
        if let NodeKind::File { data } = &mut n.kind {
            *data = Vec::new();
        }
    }

    /// Moves and/or renames a node.
    pub fn rename(&mut self, id: NodeId, new_dir: NodeId, new_name: &str, now: i64) {
        self.unlink(id);
        let n = self.node_mut(id);
        n.name = new_name.to_owned();
        n.parent = Some(new_dir);
        n.times[3] = now;
        self.link(new_dir, id);
    }

    /// True when a directory has no children.
    pub fn is_empty_dir(&self, id: NodeId) -> bool {
        match &self.node(id).kind {
            NodeKind::Dir { children, .. } => children.is_empty(),
            NodeKind::File { .. } => false,
        }
    }

    /// Children of a directory: sorted by upper-cased name, or in creation order.
    pub fn children(&self, dir: NodeId, sorted: bool) -> Vec<NodeId> {
        match &self.node(dir).kind {
            NodeKind::Dir { children, index } => {
                if sorted {
                    index.values().copied().collect()
                } else {
                    children.clone()
                }
            }
            NodeKind::File { .. } => Vec::new(),
        }
    }

    /// The volume-relative path of a node (`\dir\file`; `\` for the root).
    pub fn path_of(&self, id: NodeId) -> String {
        if let Some(host) = self.node(id).host {
            // A named stream: `\dir\file:stream` (its name as created).
            return format!("{}:{}", self.path_of(host), self.node(id).name);
        }
        let mut parts = Vec::new();
        let mut cur = Some(id);
        while let Some(c) = cur {
            let n = self.node(c);
            if n.parent.is_some() {
                parts.push(n.name.as_str());
            }
            cur = n.parent;
        }
        if parts.is_empty() {
            return "\\".to_owned();
        }
        parts.reverse();
        let mut out = String::new();
        for p in parts {
            out.push('\\');
            out.push_str(p);
        }
        out
    }

    /// Adds a file with contents at a volume-relative path, creating its directories. A path
    /// ending in `\` makes a directory.
    pub fn add_file(&mut self, path: &str, bytes: &[u8], now: i64) -> NodeId {
        let is_dir = path.ends_with('\\') || path.ends_with('/');
        let comps: Vec<&str> = path.split(['\\', '/']).filter(|c| !c.is_empty()).collect();
        let mut cur = ROOT;
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            cur = match self.child(cur, c) {
                Some(n) => n,
                None => self.create(cur, c, !last || is_dir, 0, now),
            };
        }
        if let NodeKind::File { data } = &mut self.node_mut(cur).kind {
            *data = bytes.to_vec();
        }
        cur
    }

    /// The bytes of the file at a path.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        if path.contains(':') {
            return self.stream_file(path);
        }
        let comps: Vec<&str> = path.split(['\\', '/']).filter(|c| !c.is_empty()).collect();
        let id = self.lookup(ROOT, &comps).ok()?;
        match &self.node(id).kind {
            NodeKind::File { data } => Some(data),
            NodeKind::Dir { .. } => None,
        }
    }
}

/// Matches a name against a pattern the way `FsRtlIsNameInExpression` does for `*` and `?`
/// (case-insensitive); the DOS wildcards `<`, `>` and `"` are treated as `*`, `?` and `.`.
///
/// One pass over the pattern, from its end, keeping for each suffix of the name whether the
/// rest of the pattern matches it: time `pattern × name`, memory `name`, no recursion. (Until
/// December 6 a backtracking matcher took time exponential in the number of stars, so a
/// directory query with a pattern such as `*a*a*a...*b` never finished, and a long run of stars
/// recursed once per character.)
pub fn name_matches(pattern: &[char], name: &[char]) -> bool {
    let n = name.len();
    // `next[j]`: the pattern after the current character matches `name[j..]`.
    let mut next = vec![false; n + 1];
    next[n] = true;
    let mut row = vec![false; n + 1];
    for &p in pattern.iter().rev() {
        for j in (0..=n).rev() {
            let c = name.get(j).copied();
            row[j] = match (p, c) {
                ('*' | '<', _) => next[j] || (c.is_some() && row[j + 1]),
                ('?' | '>', Some(_)) | ('"', Some('.')) => next[j + 1],
                ('>' | '"', None) => next[j],
                (p, Some(c)) => upcase_char(p) == upcase_char(c) && next[j + 1],
                (_, None) => false,
            };
        }
        std::mem::swap(&mut row, &mut next);
    }
    next[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_case_insensitively() {
        let mut m = Media::new(1, "", 0);
        m.add_file("\\Dir\\File.txt", b"abc", 0);
        let comps = ["dir", "FILE.TXT"];
        let id = m.lookup(ROOT, &comps).unwrap();
        assert_eq!(m.node(id).data(), b"abc");
        assert_eq!(m.path_of(id), "\\Dir\\File.txt");
        assert_eq!(m.lookup(ROOT, &["dir", "x"]), Err(Lookup::NameNotFound(1)));
        assert_eq!(m.lookup(ROOT, &["nope", "x"]), Err(Lookup::PathNotFound));
        assert_eq!(m.lookup(ROOT, &["dir", "file.txt", "x"]), Err(Lookup::NotADirectory));
    }

    #[test]
    fn wildcards() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(name_matches(&c("*"), &c("a.txt")));
        assert!(name_matches(&c("*.TXT"), &c("a.txt")));
        assert!(name_matches(&c("a?c"), &c("abc")));
        assert!(!name_matches(&c("a?c"), &c("ac")));
        assert!(!name_matches(&c("*.doc"), &c("a.txt")));
        assert!(name_matches(&c(""), &c("")));
        assert!(!name_matches(&c(""), &c("a")));
        assert!(name_matches(&c("**"), &c("")));
        assert!(name_matches(&c("A*B*C"), &c("axxbyyc")));
        assert!(!name_matches(&c("a*b*c"), &c("axxbyy")));
        // DOS wildcards: `<` as `*`, `>` as `?` (also at the end), `"` as `.` (also at the end).
        assert!(name_matches(&c("<.txt"), &c("a.txt")));
        assert!(name_matches(&c("ab>>"), &c("ab")));
        assert!(name_matches(&c("a>c"), &c("abc")));
        assert!(name_matches(&c("a\"b"), &c("a.b")));
        assert!(name_matches(&c("a\""), &c("a")));
        assert!(!name_matches(&c("a\"b"), &c("axb")));
        assert!(!name_matches(&c("a?"), &c("a")));
        // Many stars against a long name: polynomial, not exponential.
        let stars: String = format!("{}b", "*a".repeat(40));
        assert!(!name_matches(&c(&stars), &c(&"a".repeat(255))));
        let all_stars = "*".repeat(32_767);
        assert!(name_matches(&c(&all_stars), &c("name.txt")));
    }
}
