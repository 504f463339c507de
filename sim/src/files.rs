//! Files, sections and their handles. The file-system subsystem owns the state; the kernel core
//! calls these when a handle closes.

use crate::kernel::Kernel;

impl Kernel {
    /// A section handle was closed (`ZwClose`).
    pub fn section_handle_closed(&mut self, section: usize) {
        self.sections_closed.push(section);
    }

    /// A file handle was closed (`ZwClose`).
    pub fn file_handle_closed(&mut self, file: usize) {
        self.files_closed.push(file);
    }
}
