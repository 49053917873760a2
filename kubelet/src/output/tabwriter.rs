//! Go's `text/tabwriter` (flags 0, space padding), so columns line up exactly as kubectl's.
//!
//! Cells end with `\t`; the last cell of a line is not aligned. A column block is a run of
//! consecutive lines that have a cell in that column; its width is the widest cell plus padding
//! (at least `min_width`).

pub(crate) struct TabWriter {
    min_width: usize,
    padding: usize,
    text: String,
}

impl TabWriter {
    /// kubectl get: `tabwriter.NewWriter(out, 6, 4, 3, ' ', 0)`.
    pub(crate) fn for_table() -> Self {
        TabWriter { min_width: 6, padding: 3, text: String::new() }
    }

    /// kubectl describe: `tabwriter.Init(buf, 0, 8, 2, ' ', 0)`.
    pub(crate) fn for_describe() -> Self {
        TabWriter { min_width: 0, padding: 2, text: String::new() }
    }

    pub(crate) fn write(&mut self, s: &str) {
        self.text.push_str(s);
    }

    pub(crate) fn finish(self) -> String {
        let mut lines: Vec<Vec<&str>> = self.text.split('\n').map(|l| l.split('\t').collect()).collect();
        let trailing_newline = self.text.ends_with('\n');
        if trailing_newline {
            lines.pop();
        }
        let mut widths: Vec<usize> = Vec::new();
        let mut out = String::new();
        self.format(&lines, 0, lines.len(), &mut widths, &mut out);
        if !trailing_newline && out.ends_with('\n') {
            out.pop();
        }
        out
    }

    fn format(&self, lines: &[Vec<&str>], mut line0: usize, line1: usize, widths: &mut Vec<usize>, out: &mut String) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= lines[this].len() {
                this += 1;
                continue;
            }
            // A block of lines with a cell in this column starts here.
            self.write_lines(lines, line0, this, widths, out);
            line0 = this;
            let mut width = self.min_width;
            while this < line1 && column + 1 < lines[this].len() {
                width = width.max(lines[this][column].chars().count() + self.padding);
                this += 1;
            }
            widths.push(width);
            self.format(lines, line0, this, widths, out);
            widths.pop();
            line0 = this;
        }
        self.write_lines(lines, line0, line1, widths, out);
    }

    fn write_lines(&self, lines: &[Vec<&str>], line0: usize, line1: usize, widths: &[usize], out: &mut String) {
        for line in &lines[line0..line1] {
            for (j, cell) in line.iter().enumerate() {
                out.push_str(cell);
                if j < widths.len() && j + 1 < line.len() {
                    let w = cell.chars().count();
                    out.extend(std::iter::repeat_n(' ', widths[j].saturating_sub(w)));
                }
            }
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_like_go() {
        let mut w = TabWriter::for_table();
        w.write("NAME\tREADY\tSTATUS\tRESTARTS\tAGE\n");
        w.write("web\t1/1\tRunning\t0\t5s\n");
        w.write("a-much-longer-name\t0/2\tInit:0/1\t3 (2m ago)\t10m\n");
        assert_eq!(
            w.finish(),
            "NAME                 READY   STATUS     RESTARTS     AGE\n\
             web                  1/1     Running    0            5s\n\
             a-much-longer-name   0/2     Init:0/1   3 (2m ago)   10m\n"
        );
    }

    #[test]
    fn blocks_end_at_lines_without_the_column() {
        let mut w = TabWriter::for_describe();
        w.write("Name:\tweb\nNamespace:\tdefault\nContainers:\n  c:\n    Image:\tbusybox\n    Container ID:\t\n");
        assert_eq!(
            w.finish(),
            "Name:       web\nNamespace:  default\nContainers:\n  c:\n    Image:         busybox\n    Container ID:  \n"
        );
    }
}
