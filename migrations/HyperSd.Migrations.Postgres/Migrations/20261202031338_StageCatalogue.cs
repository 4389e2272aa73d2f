using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace HyperSd.Migrations.Postgres.Migrations
{
    /// <inheritdoc />
    public partial class StageCatalogue : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "ix_artifacts_run_id",
                table: "artifacts");

            migrationBuilder.AddColumn<string>(
                name: "kind",
                table: "stages",
                type: "text",
                nullable: false,
                defaultValue: "");

            migrationBuilder.AddColumn<int>(
                name: "attempt",
                table: "artifacts",
                type: "integer",
                nullable: true);

            migrationBuilder.AddColumn<int>(
                name: "segments",
                table: "artifacts",
                type: "integer",
                nullable: true);

            migrationBuilder.AddColumn<string>(
                name: "stage_kind",
                table: "artifacts",
                type: "text",
                nullable: true);

            migrationBuilder.AddColumn<int>(
                name: "steps",
                table: "artifacts",
                type: "integer",
                nullable: true);

            migrationBuilder.CreateIndex(
                name: "ix_artifacts_run_id_kind",
                table: "artifacts",
                columns: new[] { "run_id", "kind" });
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "ix_artifacts_run_id_kind",
                table: "artifacts");

            migrationBuilder.DropColumn(
                name: "kind",
                table: "stages");

            migrationBuilder.DropColumn(
                name: "attempt",
                table: "artifacts");

            migrationBuilder.DropColumn(
                name: "segments",
                table: "artifacts");

            migrationBuilder.DropColumn(
                name: "stage_kind",
                table: "artifacts");

            migrationBuilder.DropColumn(
                name: "steps",
                table: "artifacts");

            migrationBuilder.CreateIndex(
                name: "ix_artifacts_run_id",
                table: "artifacts",
                column: "run_id");
        }
    }
}
