using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace HyperSd.Migrations.Sqlite.Migrations
{
    /// <inheritdoc />
    public partial class StageProgressTimeAndTransientFailures : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<long>(
                name: "progress_at",
                table: "stages",
                type: "INTEGER",
                nullable: true);

            migrationBuilder.AddColumn<bool>(
                name: "transient",
                table: "stage_attempts",
                type: "INTEGER",
                nullable: true);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropColumn(
                name: "progress_at",
                table: "stages");

            migrationBuilder.DropColumn(
                name: "transient",
                table: "stage_attempts");
        }
    }
}
